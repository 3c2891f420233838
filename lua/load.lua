-- load.lua: puts a packet's state into Redis when it opens, or rebuilds it from MySQL.
-- Creates the state only if absent, so a racing open and rebuild cannot overwrite each other.
--
-- KEYS[1] packet state hash
-- KEYS[2] share list ("seq:amount" entries in grab order, the final one "seq:amount:last")
-- KEYS[3] grabbed hash (user id -> "seq:amount:at_ms:credit:request"); it always holds the
--         placeholder field "-", so it exists, and expires, before the first grab
-- KEYS[4] eligible user set
-- ARGV[1] status
-- ARGV[2] expires_at, unix ms
-- ARGV[3] credit: 1 when grabs are credited at once (paid), 0 while awaiting settlement
-- ARGV[4] keep until, unix ms: every key expires then
-- ARGV[5] number of shares S, ARGV[6] number of eligible users E, ARGV[7] number of grabbed users G
-- ARGV[8 ..] S shares, then E user ids, then G pairs (user id, grabbed value)
--
-- Returns 1 when loaded, 0 when the state was already there (nothing changed).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'expires_at', ARGV[2], 'credit', ARGV[3])
redis.call('HSET', KEYS[3], '-', '')

local s, e, g = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local i = 8
if s > 0 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, i + s - 1))
end
i = i + s
if e > 0 then
  redis.call('SADD', KEYS[4], unpack(ARGV, i, i + e - 1))
end
i = i + e
if g > 0 then
  redis.call('HSET', KEYS[3], unpack(ARGV, i, i + 2 * g - 1))
end
for k = 1, 4 do
  redis.call('PEXPIREAT', KEYS[k], ARGV[4])
end
return 1
