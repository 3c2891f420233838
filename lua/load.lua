-- load.lua: puts a packet's state into Redis from MySQL when it opens or after Redis lost it, and
-- verifies a state loaded under another dataset epoch (Redis restarted, or came back older than
-- MySQL: an AOF cut short by an OS crash, a failover to a lagging replica, a restore).
--
-- Absent state: it is written whole. Present under the shard's epoch: nothing changes (a racing
-- open and rebuild cannot overwrite each other). Present under another epoch: MySQL wins wherever
-- it is ahead, and what Redis has that MySQL has not seen yet (grabs still in the stream) stays:
--   - every share MySQL gives an owner leaves the share list, and its owner goes back into the
--     grabbed hash (a user whose share MySQL holds is answered it as a repeat, never a new one);
--   - a status MySQL has moved past open (finished, expired, refunded, pay_failed) is taken, and
--     a packet MySQL closed (expired, refunded) keeps no share: its remainder was refunded;
--   - a payment MySQL has settled credits later grabs (credit 1, awaiting_settlement -> open).
-- Then the state records the epoch it was verified under.
--
-- KEYS[1] packet state hash
-- KEYS[2] share list ("seq:amount" entries in grab order, the final one "seq:amount:last")
-- KEYS[3] grabbed hash (user id -> "seq:amount:at_ms:credit:request"); it always holds the
--         placeholder field "-", so it exists, and expires, before the first grab
-- KEYS[4] eligible user set
-- KEYS[5] the shard's dataset epoch (lua/epoch.go)
-- ARGV[1] status (MySQL's)
-- ARGV[2] expires_at, unix ms
-- ARGV[3] credit: 1 when grabs are credited at once (paid), 0 while awaiting settlement
-- ARGV[4] keep until, unix ms: every key expires then
-- ARGV[5] number of shares S, ARGV[6] number of eligible users E, ARGV[7] number of grabbed users G
-- ARGV[8] the epoch the caller read MySQL under ("" for any): if the shard's epoch is another one
--         now, Redis changed again meanwhile and nothing is written
-- ARGV[9 ..] S shares, then E user ids, then G pairs (user id, grabbed value)
--
-- Returns {code}: {1} loaded, {0} the state was there under this epoch (nothing changed), {2}
-- verified and brought in line with MySQL, {-2} the epoch key is missing (stamp it first), {-3}
-- the epoch is not ARGV[8] (read MySQL again under the new one).
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  return {-2}
end
if ARGV[8] ~= '' and ARGV[8] ~= epoch then
  return {-3}
end
local s, e, g = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local first_grabbed = 9 + s + e

if redis.call('EXISTS', KEYS[1]) == 1 then
  local cur = redis.call('HMGET', KEYS[1], 'status', 'ep')
  if cur[2] == epoch then
    return {0}
  end
  local owned = {}
  for i = first_grabbed, first_grabbed + 2 * g - 1, 2 do
    local user, value = ARGV[i], ARGV[i + 1]
    local seq = string.match(value, '^(%d+):')
    owned[seq] = true
    redis.call('SADD', KEYS[4], user) -- an owner always sees its share, even after leaving the group
    local prev = redis.call('HGET', KEYS[3], user)
    if not prev or string.match(prev, '^(%d+):') ~= seq then
      redis.call('HSET', KEYS[3], user, value) -- kept when equal: it names the request that won it
    end
  end
  local status, mysql = cur[1], ARGV[1]
  local closed = mysql == 'expired' or mysql == 'refunded'
  local ttl = redis.call('PTTL', KEYS[1])
  local list = redis.call('LRANGE', KEYS[2], 0, -1)
  local kept = {}
  if not closed then
    for _, share in ipairs(list) do
      local seq, amount = string.match(share, '^(%d+):(%d+)')
      if not owned[seq] then
        kept[#kept + 1] = seq .. ':' .. amount
      end
    end
  end
  if #kept ~= #list then
    redis.call('DEL', KEYS[2])
    if #kept > 0 then
      kept[#kept] = kept[#kept] .. ':last'
      redis.call('RPUSH', KEYS[2], unpack(kept))
      if ttl > 0 then
        redis.call('PEXPIRE', KEYS[2], ttl)
      end
    end
  end
  if status == 'open' or status == 'awaiting_settlement' or status == 'unpaid' then
    if mysql == 'finished' or closed or mysql == 'pay_failed' then
      status = mysql
    elseif #kept == 0 and #list > 0 then
      status = 'finished' -- the last share is owned in MySQL: its finishing grab was applied
    elseif mysql == 'open' then
      status = 'open'
    end
  end
  redis.call('HSET', KEYS[1], 'status', status, 'ep', epoch)
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[1], 'credit', '1')
  end
  return {2}
end

redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'expires_at', ARGV[2], 'credit', ARGV[3], 'ep', epoch)
redis.call('HSET', KEYS[3], '-', '')

local i = 9
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
return {1}
