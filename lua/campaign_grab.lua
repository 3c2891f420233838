-- campaign_grab.lua: one user grabs one award of a campaign, atomically, in one round trip.
--
-- KEYS[1] campaign state hash (status, starts_at, ends_at in unix ms, limit = awards per user)
-- KEYS[2] award list, each entry "seq:amount" (amount in fen), in hand-out order
-- KEYS[3] users hash: user id -> "count:seq:amount:at_ms:request" (how many awards the user
--         holds, and the latest of them)
-- KEYS[4] awarded hash: seq -> "user:amount:at_ms"
-- KEYS[5] the shard's event stream
-- KEYS[6] the shard's dataset epoch (lua/epoch.go); the state's "ep" must equal it
-- ARGV[1] user id
-- ARGV[2] now, unix ms (the engine's clock, not Redis's)
-- ARGV[3] campaign id
-- ARGV[4] request id: the same for go-redis's re-sends of one call, so a lost reply is not a "repeat"
--
-- Returns {code, seq, amount, at_ms, repeat}; amounts are integer strings.
--   code 0 granted, -1 state not loaded, -2 state to verify against MySQL first (loaded under
--   another dataset epoch), 2 not open (not started, or not open), 3 ended, 5 no awards left.
--   A user who holds `limit` awards gets code 0 with the latest of them and repeat = 1, whatever the
--   campaign's state is now; a re-send of the call that granted an award gets it with repeat = 0.
local state = redis.call('HMGET', KEYS[1], 'status', 'starts_at', 'ends_at', 'limit', 'ep')
if not state[1] then
  return {-1}
end
local epoch = redis.call('GET', KEYS[6])
if not epoch or state[5] ~= epoch then
  return {-2}
end

local held = 0
local prev = redis.call('HGET', KEYS[3], ARGV[1])
if prev then
  local count, seq, amount, at, request = string.match(prev, '^(%d+):(%d+):(%d+):(%d+):(.*)$')
  held = tonumber(count)
  if request == ARGV[4] then
    return {0, tonumber(seq), amount, at, 0}
  end
  if held >= tonumber(state[4]) then
    return {0, tonumber(seq), amount, at, 1}
  end
end

if state[1] ~= 'open' then
  return {2}
end
local now = tonumber(ARGV[2])
if now < tonumber(state[2]) then
  return {2}
end
if now >= tonumber(state[3]) then
  return {3}
end

local award = redis.call('LPOP', KEYS[2])
if not award then
  return {5}
end
local seq, amount = string.match(award, '^(%d+):(%d+)$')
redis.call('HSET', KEYS[3], ARGV[1], string.format('%d', held + 1) .. ':' .. seq .. ':' .. amount .. ':' .. ARGV[2] .. ':' .. ARGV[4])
redis.call('HSET', KEYS[4], seq, ARGV[1] .. ':' .. amount .. ':' .. ARGV[2])
redis.call('XADD', KEYS[5], '*', 't', 'award', 'cp', ARGV[3], 'u', ARGV[1], 'seq', seq, 'amt', amount, 'at', ARGV[2])
return {0, tonumber(seq), amount, ARGV[2], 0}
