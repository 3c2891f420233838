-- campaign_load.lua: puts a campaign's state into Redis when it is created or after Redis lost
-- it, and verifies a state loaded under another dataset epoch (Redis restarted, or came back
-- older than MySQL).
--
-- Absent state: it is written whole. Present under the shard's epoch: nothing changes (a racing
-- create and rebuild cannot overwrite each other). Present under another epoch: MySQL wins where
-- it is ahead, and what Redis has that MySQL has not seen (awards still in the stream) stays:
-- every award MySQL has leaves the award list and goes back into the awarded hash, and a user
-- MySQL counts more awards for than Redis does gets MySQL's count and latest award (so the
-- per-user limit holds, and a user at the limit is answered the award as a repeat).
--
-- KEYS[1] campaign state hash
-- KEYS[2] award list ("seq:amount" entries in hand-out order)
-- KEYS[3] users hash (user id -> "count:seq:amount:at_ms:request"); KEYS[4] awarded hash
--         (seq -> "user:amount:at_ms"). Both always hold the placeholder field "-", so they exist,
--         and expire, before the first grab.
-- KEYS[5] the shard's dataset epoch (lua/epoch.go)
-- ARGV[1] status   ARGV[2] starts_at   ARGV[3] ends_at (unix ms)   ARGV[4] awards per user
-- ARGV[5] keep until, unix ms: every key expires then
-- ARGV[6] number of awards A, ARGV[7] number of users U, ARGV[8] number of awarded seqs G
-- ARGV[9] the epoch the caller read MySQL under ("" for any): if the shard's epoch is another one
--         now, Redis changed again meanwhile and nothing is written
-- ARGV[10 ..] A awards, then U pairs (user id, users value), then G pairs (seq, awarded value)
--
-- Returns {code}: {1} loaded, {0} the state was there under this epoch (nothing changed), {2}
-- verified and brought in line with MySQL, {-2} the epoch key is missing (stamp it first), {-3}
-- the epoch is not ARGV[9] (read MySQL again under the new one).
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  return {-2}
end
if ARGV[9] ~= '' and ARGV[9] ~= epoch then
  return {-3}
end
local a, u, g = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local first_user = 10 + a
local first_awarded = first_user + 2 * u

if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'ep') == epoch then
    return {0}
  end
  local awarded = {}
  for i = first_awarded, first_awarded + 2 * g - 1, 2 do
    awarded[ARGV[i]] = true
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  end
  for i = first_user, first_user + 2 * u - 1, 2 do
    local prev = redis.call('HGET', KEYS[3], ARGV[i])
    local held = prev and tonumber(string.match(prev, '^(%d+):')) or 0
    if held < tonumber(string.match(ARGV[i + 1], '^(%d+):')) then
      redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    end
  end
  -- The list can hold up to 100,000 awards: rewritten only when MySQL took some of it, in chunks.
  local list = redis.call('LRANGE', KEYS[2], 0, -1)
  local kept = {}
  for _, award in ipairs(list) do
    if not awarded[string.match(award, '^(%d+):')] then
      kept[#kept + 1] = award
    end
  end
  if #kept ~= #list then
    local ttl = redis.call('PTTL', KEYS[1])
    redis.call('DEL', KEYS[2])
    for i = 1, #kept, 1000 do
      redis.call('RPUSH', KEYS[2], unpack(kept, i, math.min(i + 999, #kept)))
    end
    if #kept > 0 and ttl > 0 then
      redis.call('PEXPIRE', KEYS[2], ttl)
    end
  end
  redis.call('HSET', KEYS[1], 'ep', epoch)
  return {2}
end

redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'starts_at', ARGV[2], 'ends_at', ARGV[3], 'limit', ARGV[4], 'ep', epoch)
redis.call('HSET', KEYS[3], '-', '')
redis.call('HSET', KEYS[4], '-', '')

-- unpack is bounded by Lua's C stack: a large campaign goes in chunks (even, for field/value pairs).
local function push(cmd, key, first, last)
  for i = first, last, 1000 do
    redis.call(cmd, key, unpack(ARGV, i, math.min(i + 999, last)))
  end
end

push('RPUSH', KEYS[2], 10, 10 + a - 1)
push('HSET', KEYS[3], first_user, first_user + 2 * u - 1)
push('HSET', KEYS[4], first_awarded, first_awarded + 2 * g - 1)
for k = 1, 4 do
  redis.call('PEXPIREAT', KEYS[k], ARGV[5])
end
return {1}
