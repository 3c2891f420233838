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
-- answered is the replay of a marker already here, or nil.
local function answered()
  if state == 'd' then
    return {0, 1}
  elseif state == 'r' then
    return {CODE.ORDER_CLOSED, 1} -- returned before it was deducted
  elseif state == 'x' then
    return {CODE[string.match(marker, '^x#([^#]*)#')], 1}
  end
end

-- indexed reads the order's entry in the shard's order index, and the answer it forces: CONFLICT
-- when it names another product (or the other kind of order), else a replay of the marker here.
local function indexed()
  local ix = redis.call('HGET', KEYS[4], id)
  if ix and ix ~= '!' and ix ~= ARGV[6] then
    return ix, {CODE.CONFLICT, 0}
  end
  return ix, answered()
end

local ops = {}

function ops.check()
  local ix, done = indexed()
  if done then
    return done
  elseif ix == '!' then
    return {CODE.ORDER_CLOSED, 0}
  end
  local failed = check()
  return {failed and CODE[failed] or 0, 0}
end

function ops.deduct()
  local ix, done = indexed()
  if done then
    return done
  elseif ix == '!' then
    record('r#') -- returned before any deduct: this product's marker says so from now on
    return {CODE.ORDER_CLOSED, 0}
  elseif not ix then
    redis.call('HSET', KEYS[4], id, ARGV[6]) -- refused or not, the order is this product's now
  end
  local failed, counters = check()
  if failed then
    record('x#' .. failed .. '#') -- no items: nothing to give back
    return {CODE[failed], 0}
  end
  -- A plain loop, not each(): a deduct runs once per order of a sale, and a closure costs Redis CPU.
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
end

ops['return'] = function()
  if (marker or '') ~= ARGV[6] then
    return {CODE.RETRY, 0}
  elseif state == 'r' then
    return {0, 1}
  elseif state == 'd' then
    change('return', function(c, qty)
      give_back(c, qty, 's')
    end)
  end
  -- A return before any deduct is recorded too, and blocks that order's later deduct here.
  record('r#' .. encode(args()))
  return {0, 0}
end

return dispatch(ops, 'stock_sale.lua')
