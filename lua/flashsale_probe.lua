-- flashsale_probe.lua: the smallest deduct-shaped script, used to measure what Redis itself can
-- do for a flash-sale deduct. It does the same kind of work as stock_sale.lua (a check, two
-- counters, an event) with no order record and no business rules, so the engine's overhead can be
-- read as a ratio against it. Both keys of a SKU share one hash tag (Keys.FlashProbe).
--
-- KEYS[1] the SKU's hash: t, a, r, s = total, available, reserved, sold   KEYS[2] the SKU's event stream
-- ARGV[1] order id   ARGV[2] qty   ARGV[3] now, unix ms
--
-- Returns {0} when deducted, {1} when out of stock.
local qty = tonumber(ARGV[2])
if tonumber(redis.call('HGET', KEYS[1], 'a') or '0') < qty then
  return {1}
end
redis.call('HINCRBY', KEYS[1], 'a', -qty)
redis.call('HINCRBY', KEYS[1], 's', qty)
redis.call('XADD', KEYS[2], '*', 'o', ARGV[1], 'q', ARGV[2], 'at', ARGV[3])
return {0}
