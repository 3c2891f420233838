-- stock_index.lua: closes an order in one shard's order index (see stock_sale.lua) for its return,
-- when the return found no product that the order deducted from: from then on, a deduct of that
-- order on any product of the shard is refused (ORDER_CLOSED), as a return before its deduct must.
--
-- KEYS[1] the shard's order index
-- ARGV[1] "o:<order id>"
--
-- Returns {0, the order's entry as it was}: "<a>:<p>" (a deduct reached the product meanwhile:
-- return it there), "*" (an order across products), "!" (closed before), or "" (closed now).
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], '!')
end
return {0, cur or ''}
