-- stock_sale.lua (after stock_lib.lua, which gives the keys, arguments and reply): an order's
-- deduct and return on one activity product's SKUs, atomically: the hot path of a flash sale. It
-- reads only the order's marker and the items' counters and writes only what changed.
--
-- KEYS[4]   the shard's order index: "o:<order>" -> "<a>:<p>", the one product an order deducted
--           from (so its return finds it), "*" for an order across products (its products are in
--           its own record, stock_order.lua), "!" when the order was returned before any deduct
--           (stock_index.lua): its later deduct is refused
-- ARGV[1]   deduct | return | check (would a deduct succeed now? it changes nothing)
-- ARGV[2]   "o:<order id>"
-- ARGV[6]   deduct, check: the order's index value, "<a>:<p>" (this product alone) or "*"
--           return: the marker as the caller read it (the items are its items); if it has changed
--           since, nothing is done and RETRY is answered
--
-- Markers: "d#<items>" deducted, "r#<items>" returned (perhaps before any deduct, which it then
-- blocks), "x#<code>#" refused (a replay answers the same).
-- Codes: OUT_OF_STOCK, NOT_FOR_SALE, NOT_FOUND, ORDER_CLOSED, CONFLICT (the order id was used for
-- another product of this shard, or for an order of the other kind; an id reused on a product of
-- another shard is not seen here), RETRY.
--
-- The ops are branches rather than a table of functions, and the deduct walks its items in a plain
-- loop: a deduct runs once per order of a sale, and each closure a call builds costs Redis CPU.

if op == 'deduct' or op == 'check' then
  -- The order's entry in the shard's order index: CONFLICT when it names another product (or the
  -- other kind of order), "!" when the order was returned before any deduct.
  local ix = redis.call('HGET', KEYS[4], id)
  if ix and ix ~= '!' and ix ~= ARGV[6] then
    return {CODE.CONFLICT, 0}
  end
  -- A marker already here is replayed.
  if state == 'd' then
    return {0, 1}
  elseif state == 'r' then
    return {CODE.ORDER_CLOSED, 1} -- returned before it was deducted
  elseif state == 'x' then
    return {CODE[string.match(marker, '^x#([^#]*)#')], 1}
  end
  if op == 'check' then
    if ix == '!' then
      return {CODE.ORDER_CLOSED, 0}
    end
    local failed = check()
    return {failed and CODE[failed] or 0, 0}
  end
  if ix == '!' then
    record('r#') -- returned before any deduct: this product's marker says so from now on
    return {CODE.ORDER_CLOSED, 0}
  end
  if not ix then
    redis.call('HSET', KEYS[4], id, ARGV[6]) -- refused or not, the order is this product's now
  end
  local failed, counters = check()
  if failed then
    record('x#' .. failed .. '#') -- no items: nothing to give back
    return {CODE[failed], 0}
  end
  local items = '' -- as encode(args()) has them; qty is a canonical integer (the engine's int64)
  for n = 1, #counters do
    local i = 4 + 3 * n
    local k, sku, scope, q = KEYS[4 + n], ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local c, qty = counters[n], tonumber(q)
    if c.alone == nil then
      c.alone = c.fresh and redis.call('HLEN', k) == 6
    end
    if n > 1 and not c.alone then
      c = read(k, scope) -- an earlier item may have changed this SKU
    end
    c.a, c.s = c.a - qty, c.s + qty
    update(k, sku, scope, c, scope .. ':deduct:' .. q)
    local item = sku .. '|' .. scope .. '|' .. q
    items = n == 1 and item or items .. ';' .. item
  end
  record('d#' .. items)
  return {0, 0}
elseif op == 'return' then
  if (marker or '') ~= ARGV[6] then
    return {CODE.RETRY, 0}
  end
  if state == 'r' then
    return {0, 1}
  end
  if state == 'd' then
    change('return', function(c, qty)
      give_back(c, qty, 's')
    end)
  end
  -- A return before any deduct is recorded too, and blocks that order's later deduct here.
  record('r#' .. encode(args()))
  return {0, 0}
end
return redis.error_reply('stock_sale.lua: unknown op ' .. tostring(op))
