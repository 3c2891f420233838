-- settle.lua: brings a hot packet in line with its payment's final outcome.
-- Statuses only move forward: a settled packet that awaited settlement opens, and its later
-- grabs are credited; a failed one stops taking grabs whatever it was doing.
--
-- KEYS[1] packet state hash
-- ARGV[1] 'paid' or 'failed'
--
-- Returns {0} when the state was updated, {-1} when it is not in Redis (nothing to do: a rebuild
-- reads the settled state from MySQL).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {-1}
end
if ARGV[1] == 'paid' then
  redis.call('HSET', KEYS[1], 'credit', '1')
  if status == 'awaiting_settlement' or status == 'unpaid' then
    redis.call('HSET', KEYS[1], 'status', 'open')
  end
else
  redis.call('HSET', KEYS[1], 'status', 'pay_failed')
end
return {0}
