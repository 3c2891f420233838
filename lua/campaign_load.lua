-- campaign_load.lua: puts a campaign's state into Redis when it is created, or rebuilds it from MySQL.
-- Creates the state only if absent, so a racing create and rebuild cannot overwrite each other.
--
-- KEYS[1] campaign state hash
-- KEYS[2] award list ("seq:amount" entries in hand-out order)
-- KEYS[3] users hash (user id -> "count:seq:amount:at_ms:request"); KEYS[4] awarded hash
--         (seq -> "user:amount:at_ms"). Both always hold the placeholder field "-", so they exist,
--         and expire, before the first grab.
-- ARGV[1] status   ARGV[2] starts_at   ARGV[3] ends_at (unix ms)   ARGV[4] awards per user
-- ARGV[5] keep until, unix ms: every key expires then
-- ARGV[6] number of awards A, ARGV[7] number of users U, ARGV[8] number of awarded seqs G
-- ARGV[9 ..] A awards, then U pairs (user id, users value), then G pairs (seq, awarded value)
--
-- Returns 1 when loaded, 0 when the state was already there (nothing changed).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'starts_at', ARGV[2], 'ends_at', ARGV[3], 'limit', ARGV[4])
redis.call('HSET', KEYS[3], '-', '')
redis.call('HSET', KEYS[4], '-', '')

-- unpack is bounded by Lua's C stack: a large campaign goes in chunks (even, for field/value pairs).
local function push(cmd, key, first, last)
  for i = first, last, 1000 do
    redis.call(cmd, key, unpack(ARGV, i, math.min(i + 999, last)))
  end
end

local a, u, g = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local i = 9
push('RPUSH', KEYS[2], i, i + a - 1)
i = i + a
push('HSET', KEYS[3], i, i + 2 * u - 1)
i = i + 2 * u
push('HSET', KEYS[4], i, i + 2 * g - 1)
for k = 1, 4 do
  redis.call('PEXPIREAT', KEYS[k], ARGV[5])
end
return 1
