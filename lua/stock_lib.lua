-- stock_lib.lua: what every stock script shares. It is not a script of its own: lua/stock.go puts it
-- before stock_sale.lua, stock_tcc.lua and stock_voucher.lua, so each of them is one chunk that
-- starts here. Every stock script has one layout of keys and arguments:
--
-- KEYS[1]   the product's record hash: op id -> what the op did here (an order's or TCC branch's
--           marker, a voucher's answer), and "ep", the dataset epoch the product was last loaded or
--           verified under (record fields are op ids "o:…", "t:…", "v:…", so "ep" is never one)
-- KEYS[2]   the shard's event stream
-- KEYS[3]   the shard's dataset epoch (lua/epoch.go)
-- KEYS[4]   the shard's order index (stock_sale.lua)
-- KEYS[5..] one SKU hash per item, in item order. Fields: st (on | off | rev), ver, and per scope
--           ("high_seas" or "pool:<id>") <scope>:t, :a, :r, :s = total, available, reserved, sold
-- ARGV[1]   the op        ARGV[2] the op id, its record field ("" for an op that keeps none)
-- ARGV[3]   now, unix ms  ARGV[4] activity id   ARGV[5] product id
-- ARGV[6]   what the op's script says (the record as the caller read it, for ops that undo one)
-- ARGV[7..] items, three arguments each: sku, scope, qty
--
-- Every reply is {code, replay, ...}: code 0 on success, else one of CODE (lua/stock.go maps them
-- in one switch), or -2 VERIFY: the product was loaded under another dataset epoch (or never) and
-- nothing was done: verify it from MySQL (stock_load.lua) and run again. replay is 1 when the op id
-- had run before and this is its first answer. Records keep code names, as MySQL stores them.
--
-- Every record write also goes to the stream (rv on the op's last SKU event, or a t=srec entry of
-- its own), so MySQL keeps what a replay needs after Redis loses it. An event carries the SKU's
-- whole state after the change (status, version, every scope): MySQL keeps the newest.
--
-- Invariant kept by every op: for each scope t = a + r + s, and none is negative.

local CODE = {OUT_OF_STOCK = 1, ALREADY_SUBMITTED = 2, NOT_FOR_SALE = 3, NOT_FOUND = 4, ORDER_CLOSED = 5,
  REFUSED = 6, NOT_TRIED = 7, CONFIRMED = 8, ROLLED_BACK = 9, CONFLICT = 10, RETRY = 11}
local op, id, now, act, prod = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rec = KEYS[1]

-- A dataset this product was not verified under (Redis restarted, came back from an older AOF or
-- RDB, failed over, or lost it) may be older than MySQL: nothing runs on it until it is verified.
local epoch = redis.call('GET', KEYS[3])
local head = redis.call('HMGET', rec, 'ep', id)
if not epoch or head[1] ~= epoch then
  return {-2, 0}
end
-- The op id's record here, and its state: its first letter (markers) or its op (voucher answers).
local marker = head[2]
local state = marker and string.match(marker, '^([^#]*)#')

-- each calls fn(n, key, sku, scope, qty) for item n until fn returns something, which it returns.
local function each(fn)
  for i = 7, #ARGV, 3 do
    local n = (i - 4) / 3
    local r = fn(n, KEYS[4 + n], ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]))
    if r then
      return r
    end
  end
end

-- encode is the items in records: "sku|scope|qty;…"; parse reads it back.
local function encode(list)
  local parts = {}
  for n, it in ipairs(list) do
    parts[n] = it.sku .. '|' .. it.scope .. '|' .. it.qty
  end
  return table.concat(parts, ';')
end

local function parse(s)
  local list = {}
  for sku, scope, qty in string.gmatch(s or '', '(%d+)|([%w_:]+)|(%-?%d+)') do
    list[#list + 1] = {sku = sku, scope = scope, qty = tonumber(qty)}
  end
  return list
end

-- args is the op's items as a list.
local function args()
  local list = {}
  each(function(n, _, sku, scope, qty)
    list[n] = {sku = sku, scope = scope, qty = qty}
  end)
  return list
end

-- read is a SKU's status, version and one scope's counters, in one HMGET. alone: the hash holds
-- the high seas and nothing else (st, ver and four counters), so these counters are its snapshot.
-- lazy leaves alone nil and sets fresh instead, the HLEN to come only if it is needed: only a fresh
-- key (the high seas, not touched by an earlier item) can be alone, and it stays as it is until
-- this item changes it.
local touched = {}
local function read(k, scope, lazy)
  local v
  if scope == 'high_seas' then
    v = redis.call('HMGET', k, 'st', 'ver', 'high_seas:t', 'high_seas:a', 'high_seas:r', 'high_seas:s')
  else
    v = redis.call('HMGET', k, 'st', 'ver', scope .. ':t', scope .. ':a', scope .. ':r', scope .. ':s')
  end
  local c = {st = v[1], ver = tonumber(v[2]) or 0, t = tonumber(v[3]) or 0, a = tonumber(v[4]) or 0,
    r = tonumber(v[5]) or 0, s = tonumber(v[6]) or 0}
  if lazy then
    c.fresh = scope == 'high_seas' and not touched[k]
  else
    c.alone = scope == 'high_seas' and not touched[k] and redis.call('HLEN', k) == 6
  end
  touched[k] = true
  return c
end

-- check reads every item before anything moves: it answers the first refusal's code name (a SKU
-- not in the activity, not for sale, or short of stock), and the counters read (lazily), by item.
local function check()
  local counters = {}
  for i = 7, #ARGV, 3 do
    local n = (i - 4) / 3
    local c = read(KEYS[4 + n], ARGV[i + 1], true)
    if not c.st or c.st == 'rev' then
      return 'NOT_FOUND', counters
    end
    if c.st ~= 'on' then
      return 'NOT_FOR_SALE', counters
    end
    if c.a < tonumber(ARGV[i + 2]) then
      return 'OUT_OF_STOCK', counters
    end
    counters[n] = c
  end
  return nil, counters
end

-- put stores one scope's counters; a pool scope left empty goes.
local function put(k, scope, c)
  if scope ~= 'high_seas' and c.t == 0 and c.a == 0 and c.r == 0 and c.s == 0 then
    redis.call('HDEL', k, scope .. ':t', scope .. ':a', scope .. ':r', scope .. ':s')
  else
    redis.call('HSET', k, scope .. ':t', c.t, scope .. ':a', c.a, scope .. ':r', c.r, scope .. ':s', c.s)
  end
end

local pending = {}

-- emit bumps a changed SKU's version and queues its whole state for the writer. c, when given, is
-- read() of a SKU that holds the high seas alone, already put: its snapshot needs no HGETALL.
local function emit(k, sku, change, c)
  local ver, st, snap
  if c and c.alone then
    ver, st = c.ver + 1, c.st or ''
    redis.call('HSET', k, 'ver', ver)
    snap = 'high_seas=' .. c.t .. ',' .. c.a .. ',' .. c.r .. ',' .. c.s
  else
    ver, st = redis.call('HINCRBY', k, 'ver', 1), ''
    local all, scopes = redis.call('HGETALL', k), {}
    for i = 1, #all, 2 do
      if all[i] == 'st' then
        st = all[i + 1]
      else
        local s, x = string.match(all[i], '^(.+):([tars])$')
        if s then
          scopes[s] = scopes[s] or {t = 0, a = 0, r = 0, s = 0}
          scopes[s][x] = all[i + 1]
        end
      end
    end
    local parts = {}
    for s, v in pairs(scopes) do
      parts[#parts + 1] = s .. '=' .. v.t .. ',' .. v.a .. ',' .. v.r .. ',' .. v.s
    end
    table.sort(parts)
    snap = table.concat(parts, ';')
  end
  touched[k] = true
  pending[#pending + 1] = {'t', 'stock', 'a', act, 'p', prod, 'sku', sku, 'ver', ver, 'st', st,
    'snap', snap, 'op', op, 'ref', id, 'chg', change, 'at', now}
end

-- update is put, then emit, of a SKU's changed scope. A SKU that holds the high seas alone takes its
-- counters and its version in one HSET, and its snapshot is those counters, each formatted once.
local function update(k, sku, scope, c, chg)
  if not c.alone then
    put(k, scope, c)
    return emit(k, sku, chg, c)
  end
  local t, a, r, s, ver = c.t .. '', c.a .. '', c.r .. '', c.s .. '', (c.ver + 1) .. ''
  redis.call('HSET', k, 'high_seas:t', t, 'high_seas:a', a, 'high_seas:r', r, 'high_seas:s', s, 'ver', ver)
  touched[k] = true
  pending[#pending + 1] = {'t', 'stock', 'a', act, 'p', prod, 'sku', sku, 'ver', ver, 'st', c.st or '',
    'snap', 'high_seas=' .. t .. ',' .. a .. ',' .. r .. ',' .. s, 'op', op, 'ref', id, 'chg', chg, 'at', now}
end

-- change applies fn(c, qty) to each item's scope, one SKU event per item.
local function change(what, fn)
  each(function(_, k, sku, scope, qty)
    local c = read(k, scope)
    fn(c, qty)
    update(k, sku, scope, c, scope .. ':' .. what .. ':' .. qty)
  end)
end

-- give_back returns qty to a scope from reserved or sold: to available, or out of the activity
-- with a revoked SKU.
local function give_back(c, qty, from)
  c[from] = c[from] - qty
  if c.st == 'rev' then
    c.t = c.t - qty
  else
    c.a = c.a + qty
  end
end

-- flush sends the op's events; value, when set, is the record the op set, which rides on the
-- last of them (or goes alone).
local function flush(value)
  local last = pending[#pending]
  if value and last then
    last[#last + 1], last[#last + 2] = 'rv', value
  elseif value then
    redis.call('XADD', KEYS[2], '*', 't', 'srec', 'a', act, 'p', prod, 'ref', id, 'val', value, 'at', now)
  end
  for i = 1, #pending do
    redis.call('XADD', KEYS[2], '*', unpack(pending[i]))
  end
  pending = {}
end

-- record sets the op id's record and flushes the op's events with it.
local function record(value)
  redis.call('HSET', rec, id, value)
  flush(value)
end

-- dispatch runs the op from ops, the script's table of one function per op.
local function dispatch(ops, script)
  local run = ops[op]
  if not run then
    return redis.error_reply(script .. ': unknown op ' .. tostring(op))
  end
  return run()
end
