-- close.lua: closes an expired packet, taking back every share nobody grabbed, atomically.
-- A grab either ran before it (its grab event precedes the close event in the shard's stream)
-- or after it (and sees the packet expired), so each share is grabbed or refunded, never both.
--
-- KEYS[1] packet state hash (status, expires_at)
-- KEYS[2] share list, entries "seq:amount" or, for the final one, "seq:amount:last" (fen)
-- KEYS[3] the shard's event stream
-- KEYS[4] the shard's dataset epoch (lua/epoch.go); the state's "ep" must equal it
-- ARGV[1] packet id
-- ARGV[2] now, unix ms (the engine's clock, not Redis's)
--
-- Returns {code, ...}; amounts are integer strings.
--   {0, remainder, count} closed now: count shares worth remainder fen were taken back, and a
--                         close event (t close pk rem n at) was appended to the stream
--   {-1} state not loaded    {-2} state to verify against MySQL first    {1} already closed (expired or refunded), no second event
--   {2} finished, nothing left    {3} not open (unpaid, payment failed)    {4} not expired yet
local state = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'ep')
local status = state[1]
if not status then
  return {-1}
end
local epoch = redis.call('GET', KEYS[4])
if not epoch or state[3] ~= epoch then
  return {-2}
end
if status == 'expired' or status == 'refunded' then
  return {1}
end
if status == 'finished' then
  return {2}
end
if status ~= 'open' and status ~= 'awaiting_settlement' then
  return {3}
end
local expires = tonumber(state[2])
if not expires or tonumber(ARGV[2]) < expires then
  return {4}
end

local shares = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
-- Lua numbers are doubles: exact for these sums (far below 2^53), printed with %d, never %g.
local sum = 0
for _, share in ipairs(shares) do
  local amount = string.match(share, '^%d+:(%d+)')
  sum = sum + tonumber(amount)
end
local rem = string.format('%d', sum)
redis.call('HSET', KEYS[1], 'status', 'expired', 'closed_at', ARGV[2])
redis.call('XADD', KEYS[3], '*', 't', 'close', 'pk', ARGV[1], 'rem', rem, 'n', string.format('%d', #shares), 'at', ARGV[2])
return {0, rem, #shares}
