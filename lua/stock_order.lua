-- stock_order.lua: the state of one order across the activity products it deducts from.
-- An order's items may span products, and each product is changed by its own stock_sale.lua call; this
-- record says which products an order touched, so a return finds them, and what the deduct answered,
-- so a replay answers the same.
--
-- KEYS[1] the order's hash: s (pending | failed | returned), code, products ("a:p;a:p")
-- ARGV[1] op: begin | finish | return
-- ARGV[2] begin: the order's products; finish: the refusal's code. Only a deduct refused after other
--         products took stock (and gave it back) is finished; otherwise each product's record answers
--         replays, and the order stays pending.
-- ARGV[3] seconds the record is kept after its last change (replays and returns come within it)
--
-- Returns {0, state before, code, products}; state "" when the order was unknown.
local cur = redis.call('HMGET', KEYS[1], 's', 'code', 'products')
local s, code, products = cur[1] or '', cur[2] or '', cur[3] or ''
local op = ARGV[1]

if op == 'begin' then
  if s == '' then
    redis.call('HSET', KEYS[1], 's', 'pending', 'products', ARGV[2])
  end
elseif op == 'finish' then
  if s == 'pending' then
    redis.call('HSET', KEYS[1], 's', 'failed', 'code', ARGV[2])
  end
elseif op == 'return' then
  -- Recorded even for an unknown order: its later deduct is refused.
  redis.call('HSET', KEYS[1], 's', 'returned')
else
  return redis.error_reply('stock_order.lua: unknown op ' .. tostring(op))
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {0, s, code, products}
