-- stock_voucher.lua (after stock_lib.lua, which gives the keys, arguments and reply): a merchant's
-- voucher operations on one activity product's SKUs, each atomic.
--
-- ARGV[1]   submit | edit | halt | revoke | salvage | release | rollback
-- ARGV[2]   "v:<voucher>"; "" for an op that keeps no record (halt, and the revoke of a forced exit:
--           both are idempotent by the SKU's state, and a record would outlive a later resubmit)
-- ARGV[6]   rollback: the record as the caller read it (the items are what it applied); if it has
--           changed since, nothing is done and RETRY is answered. Others: ""
-- items     submit: (sku, "high_seas", stock); edit: (sku, "high_seas", delta); halt, revoke:
--           (sku, "high_seas", 0); salvage, release: (sku, "pool:<id>", qty)
--
-- A voucher's record keeps its op, its answer and what it moved, which is what a rollback undoes:
-- "op#code#r1,r2#applied items" (codes by name, "-" for an item that succeeded); a replay answers
-- the first answer again. Replies add one code per item (salvage, release) or the quantity
-- withdrawn from the activity (revoke).
-- Codes: OUT_OF_STOCK, ALREADY_SUBMITTED, NOT_FOR_SALE, NOT_FOUND, ROLLED_BACK, CONFLICT (the
-- voucher names another op), RETRY.

-- reply is a fresh answer {code, 0, extra…}; save records it (with the items it applied) when the
-- op keeps a record.
local function reply(code, extra)
  local out = {CODE[code] or 0, 0}
  for _, v in ipairs(extra or {}) do
    out[#out + 1] = v
  end
  return out
end

local names = {}
for name, n in pairs(CODE) do
  names[n] = name
end

local function save(answer, applied)
  if id == '' then
    flush()
    return answer
  end
  local results = {}
  for i = 3, #answer do
    local v = answer[i]
    if op == 'salvage' or op == 'release' then
      v = names[v] or '-' -- an item's code by name; 0, success, as "-"
    end
    results[#results + 1] = tostring(v)
  end
  record(op .. '#' .. (names[answer[1]] or '') .. '#' .. table.concat(results, ',') .. '#' .. encode(applied or {}))
  return answer
end

local function replayed()
  local code, results = string.match(marker, '^[^#]*#([^#]*)#([^#]*)#')
  if state == 'rollback' then
    return {CODE.ROLLED_BACK, 1} -- rolled back (perhaps before it ran): it must not run now
  elseif state ~= op then
    return {CODE.CONFLICT, 1}
  end
  local out = {CODE[code] or 0, 1}
  for r in string.gmatch(results, '[^,]+') do
    out[#out + 1] = CODE[r] or tonumber(r) or 0
  end
  return out
end

-- move takes qty from one scope to another of a SKU: available to available.
local function move(k, from, to, qty)
  local src, dst = read(k, from), read(k, to)
  src.t, src.a = src.t - qty, src.a - qty
  dst.t, dst.a = dst.t + qty, dst.a + qty
  put(k, from, src)
  put(k, to, dst)
end

local function status(k)
  return redis.call('HGET', k, 'st')
end

local ops = {}

function ops.submit()
  local taken = each(function(_, k, sku)
    if status(k) then
      return sku
    end
  end)
  if taken then
    return save(reply('ALREADY_SUBMITTED', {tonumber(taken)}))
  end
  each(function(_, k, sku, _, qty)
    redis.call('HSET', k, 'st', 'on')
    put(k, 'high_seas', {t = qty, a = qty, r = 0, s = 0})
    emit(k, sku, 'high_seas:+' .. qty)
  end)
  return save(reply(), args())
end

function ops.edit()
  local st = status(KEYS[5])
  if not st or st == 'rev' then
    return save(reply('NOT_FOUND'))
  end
  local c, qty = read(KEYS[5], 'high_seas'), tonumber(ARGV[9])
  if c.a + qty < 0 then
    return save(reply('OUT_OF_STOCK')) -- never below what is reserved, sold or in pools
  end
  c.t, c.a = c.t + qty, c.a + qty
  put(KEYS[5], 'high_seas', c)
  emit(KEYS[5], ARGV[7], 'high_seas:' .. qty, c)
  return save(reply(), args())
end

-- Halt: not for sale, so deducts and salvages stop; already out (halted, revoked) is success.
function ops.halt()
  local st = status(KEYS[5])
  if not st then
    return reply('NOT_FOUND')
  end
  if st == 'on' then
    redis.call('HSET', KEYS[5], 'st', 'off')
    emit(KEYS[5], ARGV[7], 'not_for_sale')
  end
  flush()
  return reply()
end

function ops.revoke()
  local k, sku = KEYS[5], ARGV[7]
  local st = status(k)
  if not st then
    return save(reply('NOT_FOUND'))
  elseif st == 'rev' then
    return save(reply(nil, {0}))
  end
  -- Not for sale first: from here no salvage and no deduct can take this SKU's stock.
  redis.call('HSET', k, 'st', 'rev')
  local all = redis.call('HGETALL', k)
  for i = 1, #all, 2 do
    local pool = string.match(all[i], '^(pool:%d+):t$')
    if pool then
      local c = read(k, pool)
      move(k, pool, 'high_seas', c.a)
    end
  end
  -- Then removed: what is available leaves the activity; reserved and sold stay until settled.
  local hs = read(k, 'high_seas')
  local withdrawn = hs.a
  hs.t, hs.a = hs.t - withdrawn, 0
  put(k, 'high_seas', hs)
  emit(k, sku, 'revoked:-' .. withdrawn)
  return save(reply(nil, {withdrawn}), {{sku = sku, scope = 'high_seas', qty = withdrawn}})
end

-- pools moves each item between the high seas and its pool, each on its own.
local function pools(from_pool)
  local answer, applied = reply(), {}
  each(function(_, k, sku, scope, qty)
    local st = status(k)
    local from, to = 'high_seas', scope
    if from_pool then
      from, to = scope, 'high_seas'
    end
    local code
    if not st or st == 'rev' then
      code = 'NOT_FOUND'
    elseif not from_pool and st ~= 'on' then
      code = 'NOT_FOR_SALE'
    elseif read(k, from).a < qty then
      code = 'OUT_OF_STOCK'
    else
      move(k, from, to, qty)
      emit(k, sku, from .. '->' .. to .. ':' .. qty)
      applied[#applied + 1] = {sku = sku, scope = scope, qty = qty}
    end
    answer[#answer + 1] = CODE[code] or 0
  end)
  return save(answer, applied)
end

function ops.salvage()
  return pools(false)
end

ops.release = function()
  return pools(true)
end

-- undo is what a rollback does to each op's applied item: can(k, it) says whether it still can.
local undo = {
  submit = {
    can = function(k, it)
      local c = read(k, 'high_seas')
      return c.a == it.qty and c.t == it.qty -- none of it has moved since
    end,
    run = function(k, it)
      redis.call('HDEL', k, 'st') -- no status: MySQL's row says the SKU is not in the activity
      put(k, 'high_seas', {t = 0, a = 0, r = 0, s = 0})
      emit(k, it.sku, 'rollback:submit')
      -- Gone, so it can be submitted again; the version goes on, as MySQL keeps the newest.
      local ver = redis.call('HGET', k, 'ver')
      redis.call('DEL', k)
      redis.call('HSET', k, 'ver', ver)
    end,
  },
  edit = {
    can = function(k, it)
      return read(k, 'high_seas').a - it.qty >= 0
    end,
    run = function(k, it)
      local c = read(k, 'high_seas')
      c.t, c.a = c.t - it.qty, c.a - it.qty
      put(k, 'high_seas', c)
      emit(k, it.sku, 'rollback:edit:' .. (-it.qty))
    end,
  },
  salvage = {
    can = function(k, it)
      return read(k, it.scope).a >= it.qty
    end,
    run = function(k, it)
      move(k, it.scope, 'high_seas', it.qty)
      emit(k, it.sku, 'rollback:' .. it.scope .. '->high_seas:' .. it.qty)
    end,
  },
  release = {
    can = function(k, it)
      return read(k, 'high_seas').a >= it.qty
    end,
    run = function(k, it)
      move(k, 'high_seas', it.scope, it.qty)
      emit(k, it.sku, 'rollback:high_seas->' .. it.scope .. ':' .. it.qty)
    end,
  },
}

function ops.rollback()
  if (marker or '') ~= ARGV[6] then
    return reply('RETRY')
  end
  if not marker then
    record('rollback###') -- rolled back before it ran: the op can no longer run under this voucher
    return reply()
  end
  if state == 'rollback' then
    return {0, 1}
  end
  local u = undo[state]
  if not u then
    return reply('NOT_FOR_SALE') -- a revoke: what left the activity is the merchant's again; not undone
  end
  local code, applied = string.match(marker, '^[^#]*#([^#]*)#[^#]*#(.*)$')
  local list = parse(applied)
  -- All or nothing: check every item can be undone before undoing any.
  for n, it in ipairs(list) do
    local k = KEYS[4 + n]
    if status(k) == 'rev' then
      return reply('NOT_FOR_SALE')
    end
    if not u.can(k, it) then
      return reply('OUT_OF_STOCK') -- some of it has moved on; it cannot be taken back
    end
  end
  for n, it in ipairs(list) do
    u.run(KEYS[4 + n], it)
  end
  record('rollback#' .. code .. '##' .. applied)
  return reply()
end

-- A voucher's op answers its first answer again (rollback reads the record itself).
if marker and op ~= 'rollback' then
  return replayed()
end
return dispatch(ops, 'stock_voucher.lua')
