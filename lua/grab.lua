-- grab.lua: one user grabs one share of a red packet, atomically, in one round trip.
--
-- KEYS[1] packet state hash (status, expires_at, credit)
-- KEYS[2] share list, each entry "seq:amount" (amount in fen); the final share is marked
--         "seq:amount:last", so taking it finishes the packet without keeping a counter
-- KEYS[3] grabbed hash: user id -> "seq:amount:at_ms:credit:request"
-- KEYS[4] eligible user set (snapshot taken when the packet opened)
-- KEYS[5] the shard's event stream
-- KEYS[6] the shard's dataset epoch (lua/epoch.go); the state's "ep" must equal it
-- ARGV[1] user id
-- ARGV[2] now, unix ms (the engine's clock, not Redis's)
-- ARGV[3] packet id
-- ARGV[4] request id: the same for go-redis's re-sends of one call, so a lost reply is not a "repeat"
--
-- Best luck is not tracked here: shares are handed out in seq order, so the first to draw the
-- largest amount is the lowest seq among the largest, derived when the packet is read.
--
-- Returns {code, seq, amount, at_ms, credit, repeat}; amounts are integer strings.
--   code 0 granted, -1 state not loaded, -2 state to verify against MySQL first (loaded under
--   another dataset epoch: Redis may have come back older than MySQL), 2 not open, 3 expired,
--   4 not eligible, 5 sold out.
--   A user who already holds a share gets code 0 with that share and repeat = 1 (0 when the
--   earlier call was this same request).
local state = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'credit', 'ep')
local status = state[1]
if not status then
  return {-1}
end
local epoch = redis.call('GET', KEYS[6])
if not epoch or state[4] ~= epoch then
  return {-2}
end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0 then
  return {4}
end

-- A grab that happened stays visible whatever the status is now.
local prev = redis.call('HGET', KEYS[3], ARGV[1])
if prev then
  local seq, amount, at, credit, request = string.match(prev, '^(%d+):(%d+):(%d+):(%d):(.*)$')
  local rep = 1
  if request == ARGV[4] then
    rep = 0
  end
  return {0, tonumber(seq), amount, at, tonumber(credit), rep}
end

if status == 'finished' then
  return {5}
end
if status == 'expired' or status == 'refunded' then
  return {3}
end
if status ~= 'open' and status ~= 'awaiting_settlement' then
  return {2}
end
if tonumber(ARGV[2]) >= tonumber(state[2]) then
  return {3}
end

local share = redis.call('LPOP', KEYS[2])
if not share then
  return {5}
end
local seq, amount, last = string.match(share, '^(%d+):(%d+)(.*)$')
local credit = state[3]

redis.call('HSET', KEYS[3], ARGV[1], seq .. ':' .. amount .. ':' .. ARGV[2] .. ':' .. credit .. ':' .. ARGV[4])
local finished = '0'
if last ~= '' then
  finished = '1'
  redis.call('HSET', KEYS[1], 'status', 'finished', 'finished_at', ARGV[2])
end
redis.call('XADD', KEYS[5], '*', 't', 'grab', 'pk', ARGV[3], 'u', ARGV[1], 'seq', seq, 'amt', amount,
  'at', ARGV[2], 'cr', credit, 'fin', finished)
return {0, tonumber(seq), amount, ARGV[2], tonumber(credit), 0}
