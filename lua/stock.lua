-- stock.lua: every change to the stock of one activity product's SKUs, atomically, in one round trip.
-- One script over one product's keys is what makes an operation all-or-nothing and excludes the
-- product's other operations while it runs (the seed's LOCK_SUBMIT / LOCK_*_SKU need no lock here).
--
-- KEYS[1]   the product's record hash: op id -> what that op did (its first result, or its marker),
--           and "ep", the dataset epoch the product was last loaded or verified under (record
--           fields are op ids "v:…", "o:…", "t:…", so "ep" is never one)
-- KEYS[2]   the shard's event stream
-- KEYS[3]   the shard's dataset epoch (lua/epoch.go)
-- KEYS[4..] one SKU hash per item, in item order. Fields: st (on | off | rev), ver, and per scope
--           ("high_seas" or "pool:<id>") <scope>:t, :a, :r, :s = total, available, reserved, sold.
-- ARGV[1]   op: submit | edit | halt | revoke | salvage | release | rollback   (vouchers)
--               deduct | return                                             (orders)
--               try | confirm | cancel                                      (TCC branches)
-- ARGV[2]   op id, the record field: "v:<voucher>", "o:<order id>", "t:<gid>/<branch id>"; "" for
--           an op that keeps no record (halt, and the revoke of a forced exit: both are idempotent
--           by the SKU's state, and a record would outlive a later resubmit of the SKU)
-- ARGV[3]   now, unix ms
-- ARGV[4]   activity id   ARGV[5] product id
-- ARGV[6]   items "sku|scope|qty;sku|scope|qty" (qty: stock for submit, delta for edit)
-- ARGV[7]   return, confirm, cancel, rollback: the record as the caller read it (keys were built
--           from its items); if it has changed since, nothing is done and RETRY is answered.
--
-- Returns {code, replay, ...}: code "" on success or an API code (OUT_OF_STOCK, ALREADY_SUBMITTED,
-- NOT_FOR_SALE, NOT_FOUND, ORDER_CLOSED, REFUSED, NOT_TRIED, CONFIRMED, ROLLED_BACK, CONFLICT,
-- RETRY), or VERIFY: the product was loaded under another dataset epoch (or never), nothing was
-- done, verify it from MySQL (stock_load.lua) and run again. replay 1 when the op
-- id had run before and this is its first result. Per-item ops (salvage, release) add one code per
-- item; revoke adds the quantity withdrawn from the activity.
--
-- Every write of a record also goes to the stream, so MySQL keeps what a replay needs after Redis
-- loses it: on the op's last stock event (fields rv, the value, and rk, its rank; the event's ref is
-- the op id), or, for an op that changed no SKU, as an entry of its own (t=srec: a, p, ref, val,
-- rk, at). Rank 1: a first record (a voucher's answer, d, x, t); rank 2: a terminal one (rollback,
-- r, f, c). A record only ever moves to a higher rank, which is how a verification tells the more
-- advanced of two values.
--
-- Invariant kept by every branch: for each scope t = a + r + s, and none is negative.

local op, id, now, act, prod = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rec = KEYS[1]

-- A dataset this product was not verified under (Redis restarted, came back from an older AOF or
-- RDB, failed over, or lost it) may be older than MySQL: nothing runs on it until it is verified.
local epoch = redis.call('GET', KEYS[3])
if not epoch or redis.call('HGET', rec, 'ep') ~= epoch then
  return {'VERIFY', 0}
end

local function rank(value)
  local state = string.match(value, '^([^#]*)#')
  if state == 'rollback' or state == 'r' or state == 'f' or state == 'c' then
    return 2
  end
  return 1
end

-- The op's events, appended to the stream when it ends (flush): the record it set rides on its last
-- stock event, so a deduct is one stream entry and the writer's batches carry as many deducts as
-- before records were durable.
local pending, recorded = {}, nil

-- record sets op id's record; flush sends it to the writer.
local function record(value)
  redis.call('HSET', rec, id, value)
  recorded = value
end

local function flush()
  for i, fields in ipairs(pending) do
    if i == #pending and recorded then
      fields[#fields + 1], fields[#fields + 2] = 'rv', recorded
      fields[#fields + 1], fields[#fields + 2] = 'rk', rank(recorded)
    end
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  end
  if #pending == 0 and recorded then
    redis.call('XADD', KEYS[2], '*', 't', 'srec', 'a', act, 'p', prod, 'ref', id, 'val', recorded,
      'rk', rank(recorded), 'at', now)
  end
end

local function parse_items(s)
  local items = {}
  for sku, scope, qty in string.gmatch(s or '', '(%d+)|([%w_:]+)|(%-?%d+)') do
    items[#items + 1] = {sku = sku, scope = scope, qty = tonumber(qty)}
  end
  return items
end

local function encode_items(items)
  local parts = {}
  for i, it in ipairs(items) do
    parts[i] = it.sku .. '|' .. it.scope .. '|' .. it.qty
  end
  return table.concat(parts, ';')
end

local function get(k, scope)
  local v = redis.call('HMGET', k, scope .. ':t', scope .. ':a', scope .. ':r', scope .. ':s')
  return {t = tonumber(v[1]) or 0, a = tonumber(v[2]) or 0, r = tonumber(v[3]) or 0, s = tonumber(v[4]) or 0}
end

local function put(k, scope, c)
  if scope ~= 'high_seas' and c.t == 0 and c.a == 0 and c.r == 0 and c.s == 0 then
    redis.call('HDEL', k, scope .. ':t', scope .. ':a', scope .. ':r', scope .. ':s')
  else
    redis.call('HSET', k, scope .. ':t', c.t, scope .. ':a', c.a, scope .. ':r', c.r, scope .. ':s', c.s)
  end
end

-- A changed SKU bumps its version and sends its whole state to the writer; MySQL keeps the newest.
local function emit(k, sku, change)
  local ver = redis.call('HINCRBY', k, 'ver', 1)
  local all = redis.call('HGETALL', k)
  local st, scopes = '', {}
  for i = 1, #all, 2 do
    local f, v = all[i], all[i + 1]
    if f == 'st' then
      st = v
    else
      local scope, c = string.match(f, '^(.+):([tars])$')
      if scope then
        scopes[scope] = scopes[scope] or {t = 0, a = 0, r = 0, s = 0}
        scopes[scope][c] = v
      end
    end
  end
  local snap = {}
  for scope, c in pairs(scopes) do
    snap[#snap + 1] = scope .. '=' .. c.t .. ',' .. c.a .. ',' .. c.r .. ',' .. c.s
  end
  table.sort(snap)
  pending[#pending + 1] = {'t', 'stock', 'a', act, 'p', prod, 'sku', sku, 'ver', ver, 'st', st,
    'snap', table.concat(snap, ';'), 'op', op, 'ref', id, 'chg', change, 'at', now}
end

-- Stock that leaves a revoked SKU (a return, a cancel) leaves the activity with it.
local function give_back(k, scope, c, qty, from)
  c[from] = c[from] - qty
  if redis.call('HGET', k, 'st') == 'rev' then
    c.t = c.t - qty
  else
    c.a = c.a + qty
  end
end

local function reply(code, extra)
  local out = {code, 0}
  for _, v in ipairs(extra or {}) do
    out[#out + 1] = v
  end
  return out
end

-- Voucher ops answer their first result again. The record keeps the op, its answer and what it
-- moved, which is what a rollback undoes: "op#code#r1,r2#applied items".
local function save(answer, applied)
  local results = {}
  for i = 3, #answer do
    local v = tostring(answer[i])
    if v == '' then
      v = '-' -- an item that succeeded
    end
    results[#results + 1] = v
  end
  if id == '' then
    return answer
  end
  record(op .. '#' .. answer[1] .. '#' .. table.concat(results, ',') .. '#' .. encode_items(applied or {}))
  return answer
end

local function replayed(saved)
  local sop, code, results = string.match(saved, '^([^#]*)#([^#]*)#([^#]*)#')
  if sop == 'rollback' then
    return {'ROLLED_BACK', 1} -- rolled back (perhaps before it ran): it must not run now
  end
  if sop ~= op then
    return {'CONFLICT', 1} -- the voucher names another operation
  end
  local out = {code, 1}
  for r in string.gmatch(results, '[^,]+') do
    if r == '-' then
      r = ''
    end
    out[#out + 1] = tonumber(r) or r
  end
  return out
end

local items = parse_items(ARGV[6])

-- run is the op; every return below is its answer, and its events are flushed after it.
local function run()
  local function sku_state(i)
    return redis.call('HGET', KEYS[i + 3], 'st')
  end

  -- Voucher ops ---------------------------------------------------------------------------------

  if id ~= '' and (op == 'submit' or op == 'edit' or op == 'revoke' or op == 'salvage' or op == 'release') then
    local saved = redis.call('HGET', rec, id)
    if saved then
      return replayed(saved)
    end
  end

  if op == 'submit' then
    for i, it in ipairs(items) do
      if sku_state(i) then
        return save(reply('ALREADY_SUBMITTED', {tonumber(it.sku)}))
      end
    end
    for i, it in ipairs(items) do
      local k = KEYS[i + 3]
      redis.call('HSET', k, 'st', 'on')
      put(k, 'high_seas', {t = it.qty, a = it.qty, r = 0, s = 0})
      emit(k, it.sku, 'high_seas:+' .. it.qty)
    end
    return save(reply(''), items)
  end

  if op == 'edit' then
    local it, k = items[1], KEYS[4]
    local st = sku_state(1)
    if not st or st == 'rev' then
      return save(reply('NOT_FOUND'))
    end
    local c = get(k, 'high_seas')
    if c.a + it.qty < 0 then
      return save(reply('OUT_OF_STOCK')) -- never below what is reserved, sold or in pools
    end
    c.t, c.a = c.t + it.qty, c.a + it.qty
    put(k, 'high_seas', c)
    emit(k, it.sku, 'high_seas:' .. it.qty)
    return save(reply(''), items)
  end

  -- Halt: not for sale, so deducts and salvages stop; already out (halted, revoked) is success.
  if op == 'halt' then
    local st = sku_state(1)
    if not st then
      return reply('NOT_FOUND')
    end
    if st == 'on' then
      redis.call('HSET', KEYS[4], 'st', 'off')
      emit(KEYS[4], items[1].sku, 'not_for_sale')
    end
    return reply('')
  end

  if op == 'revoke' then
    local it, k = items[1], KEYS[4]
    local st = sku_state(1)
    if not st then
      return save(reply('NOT_FOUND'))
    end
    if st == 'rev' then
      return save(reply('', {0}))
    end
    -- Not for sale first: from here no salvage and no deduct can take this SKU's stock.
    redis.call('HSET', k, 'st', 'rev')
    local hs = get(k, 'high_seas')
    local all = redis.call('HGETALL', k)
    for i = 1, #all, 2 do
      local pool = string.match(all[i], '^(pool:%d+):t$')
      if pool then
        local c = get(k, pool)
        hs.t, hs.a = hs.t + c.a, hs.a + c.a
        c.t, c.a = c.t - c.a, 0
        put(k, pool, c)
      end
    end
    -- Then removed: what is available leaves the activity; reserved and sold stay until settled.
    local withdrawn = hs.a
    hs.t, hs.a = hs.t - withdrawn, 0
    put(k, 'high_seas', hs)
    emit(k, it.sku, 'revoked:-' .. withdrawn)
    return save(reply('', {withdrawn}), {{sku = it.sku, scope = 'high_seas', qty = withdrawn}})
  end

  if op == 'salvage' or op == 'release' then
    local answer, applied = reply(''), {}
    for i, it in ipairs(items) do
      local k, st = KEYS[i + 3], sku_state(i)
      local from, to = 'high_seas', it.scope
      if op == 'release' then
        from, to = it.scope, 'high_seas'
      end
      local code = ''
      if not st or st == 'rev' then
        code = 'NOT_FOUND'
      elseif op == 'salvage' and st ~= 'on' then
        code = 'NOT_FOR_SALE'
      else
        local src, dst = get(k, from), get(k, to)
        if src.a < it.qty then
          code = 'OUT_OF_STOCK'
        else
          src.t, src.a = src.t - it.qty, src.a - it.qty
          dst.t, dst.a = dst.t + it.qty, dst.a + it.qty
          put(k, from, src)
          put(k, to, dst)
          emit(k, it.sku, from .. '->' .. to .. ':' .. it.qty)
          applied[#applied + 1] = it
        end
      end
      answer[#answer + 1] = code
    end
    return save(answer, applied)
  end

  if op == 'rollback' then
    local saved = redis.call('HGET', rec, id)
    if (saved or '') ~= (ARGV[7] or '') then
      return reply('RETRY')
    end
    if not saved then
      -- Rolled back before it ran: the op can no longer run under this voucher.
      record('rollback###')
      return reply('')
    end
    local sop, code, _, applied = string.match(saved, '^([^#]*)#([^#]*)#([^#]*)#(.*)$')
    if sop == 'rollback' then
      return {'', 1}
    end
    if sop == 'revoke' or sop == 'halt' then
      return reply('NOT_FOR_SALE') -- what left the activity is the merchant's again; not undone
    end
    local undo = parse_items(applied)
    -- All or nothing: check every item can be undone before undoing any.
    for i, it in ipairs(undo) do
      local k = KEYS[i + 3]
      if sku_state(i) == 'rev' then
        return reply('NOT_FOR_SALE')
      end
      if sop == 'submit' then
        local c = get(k, 'high_seas')
        if c.a ~= it.qty or c.t ~= it.qty then
          return reply('OUT_OF_STOCK') -- some of it has moved; the submit cannot be taken back
        end
      elseif sop == 'edit' then
        if get(k, 'high_seas').a - it.qty < 0 then
          return reply('OUT_OF_STOCK')
        end
      elseif sop == 'salvage' then
        if get(k, it.scope).a < it.qty then
          return reply('OUT_OF_STOCK')
        end
      elseif sop == 'release' then
        if get(k, 'high_seas').a < it.qty then
          return reply('OUT_OF_STOCK')
        end
      end
    end
    for i, it in ipairs(undo) do
      local k = KEYS[i + 3]
      if sop == 'submit' then
        redis.call('HDEL', k, 'st') -- no status: MySQL's row says the SKU is not in the activity
        put(k, 'high_seas', {t = 0, a = 0, r = 0, s = 0})
        emit(k, it.sku, 'rollback:submit')
        -- Gone, so it can be submitted again; the version goes on, as MySQL keeps the newest.
        local ver = redis.call('HGET', k, 'ver')
        redis.call('DEL', k)
        redis.call('HSET', k, 'ver', ver)
      elseif sop == 'edit' then
        local c = get(k, 'high_seas')
        c.t, c.a = c.t - it.qty, c.a - it.qty
        put(k, 'high_seas', c)
        emit(k, it.sku, 'rollback:edit:' .. (-it.qty))
      else
        local from, to = it.scope, 'high_seas'
        if sop == 'release' then
          from, to = 'high_seas', it.scope
        end
        local src, dst = get(k, from), get(k, to)
        src.t, src.a = src.t - it.qty, src.a - it.qty
        dst.t, dst.a = dst.t + it.qty, dst.a + it.qty
        put(k, from, src)
        put(k, to, dst)
        emit(k, it.sku, 'rollback:' .. from .. '->' .. to .. ':' .. it.qty)
      end
    end
    record('rollback#' .. code .. '##' .. applied)
    return reply('')
  end

  -- Orders and TCC branches ---------------------------------------------------------------------
  -- The record holds a marker: "<state>#<items>". Orders: d deducted, r returned, x refused ("x#<code>#",
  -- so a replay answers the same). TCC branches: t tried (reserved), f confirmed, c cancelled.

  local marker = redis.call('HGET', rec, id)
  local mstate = marker and string.match(marker, '^(%a)#') or nil

  -- Checks every item before anything moves; answers the first failure's code.
  local function check(need)
    for i, it in ipairs(items) do
      local st = sku_state(i)
      if not st or st == 'rev' then
        return 'NOT_FOUND'
      end
      if st ~= 'on' then
        return 'NOT_FOR_SALE'
      end
      if get(KEYS[i + 3], it.scope).a < it.qty then
        return 'OUT_OF_STOCK'
      end
    end
    return nil
  end

  if op == 'deduct' or op == 'try' then
    if mstate == 'd' or mstate == 't' or mstate == 'f' then
      return {'', 1}
    end
    if mstate == 'r' then
      return reply('ORDER_CLOSED') -- returned before it was deducted
    end
    if mstate == 'c' then
      return reply('REFUSED') -- cancelled before its try arrived: the late try must not reserve
    end
    if mstate == 'x' then
      return {string.match(marker, '^x#([^#]*)#'), 1}
    end
    local failed = check()
    if failed then
      if op == 'deduct' then
        record('x#' .. failed .. '#') -- no items: nothing to give back
      end
      return reply(failed)
    end
    for i, it in ipairs(items) do
      local k = KEYS[i + 3]
      local c = get(k, it.scope)
      c.a = c.a - it.qty
      if op == 'deduct' then
        c.s = c.s + it.qty
      else
        c.r = c.r + it.qty
      end
      put(k, it.scope, c)
      emit(k, it.sku, it.scope .. ':' .. op .. ':' .. it.qty)
    end
    record((op == 'deduct' and 'd' or 't') .. '#' .. encode_items(items))
    return reply('')
  end

  -- return, confirm, cancel work on the items of the marker the caller read.
  if (marker or '') ~= (ARGV[7] or '') then
    return reply('RETRY')
  end

  if op == 'return' then
    if mstate == 'r' then
      return {'', 1}
    end
    if mstate == 'd' then
      for i, it in ipairs(items) do
        local k = KEYS[i + 3]
        local c = get(k, it.scope)
        give_back(k, it.scope, c, it.qty, 's')
        put(k, it.scope, c)
        emit(k, it.sku, it.scope .. ':return:' .. it.qty)
      end
    end
    -- A return before any deduct is recorded too, and blocks that order's later deduct.
    record('r#' .. encode_items(items))
    return reply('')
  end

  if op == 'confirm' then
    if mstate == 'f' then
      return {'', 1}
    end
    if mstate ~= 't' then
      return reply(mstate == 'c' and 'REFUSED' or 'NOT_TRIED')
    end
    for i, it in ipairs(items) do
      local k = KEYS[i + 3]
      local c = get(k, it.scope)
      c.r, c.s = c.r - it.qty, c.s + it.qty
      put(k, it.scope, c)
      emit(k, it.sku, it.scope .. ':confirm:' .. it.qty)
    end
    record('f#' .. encode_items(items))
    return reply('')
  end

  if op == 'cancel' then
    if mstate == 'c' then
      return {'', 1}
    end
    if mstate == 'f' then
      return reply('CONFIRMED')
    end
    if mstate == 't' then
      for i, it in ipairs(items) do
        local k = KEYS[i + 3]
        local c = get(k, it.scope)
        give_back(k, it.scope, c, it.qty, 'r')
        put(k, it.scope, c)
        emit(k, it.sku, it.scope .. ':cancel:' .. it.qty)
      end
    end
    -- A cancel before its try (null compensation) is recorded too: the late try is refused.
    record('c#' .. encode_items(items))
    return reply('')
  end

  return redis.error_reply('stock.lua: unknown op ' .. tostring(op))
end

local answer = run()
flush()
return answer
