-- stock_load.lua: verifies an activity product's stock against MySQL after Redis restarted, lost
-- it, or came back older than MySQL (an AOF cut short by an OS crash, a failover to a lagging
-- replica, a restore), and loads a product Redis never had. The engine runs it under the product's
-- load lock: every "records" call first, then one "finish" call, which is what lets the stock scripts run
-- on the product again (it marks the product's record hash with the shard's epoch).
--
-- MySQL wins wherever it is ahead, and what Redis has that MySQL has not seen yet (changes still in
-- the stream) stays:
--   - a SKU MySQL has at a newer version than Redis (or that Redis lacks) takes MySQL's status,
--     counters and version, so the versions of later changes continue from MySQL's;
--   - a record (an op id's answer or marker) MySQL has at a higher rank than Redis (or that Redis
--     lacks) takes MySQL's value. Rank 1: a first record (a voucher's answer, d, x, t); rank 2: a
--     terminal one (rollback, r, f, c); see lua.StockRecordRank.
--
-- KEYS[1]   the product's record hash (its "ep" field: the epoch it was verified under)
-- KEYS[2]   the shard's dataset epoch (lua/epoch.go)
-- KEYS[3..] finish: one SKU hash per SKU MySQL has, in ARGV order
-- ARGV[1]   records | finish
-- ARGV[2]   the epoch MySQL was read under (adopted in MySQL first, see engine/epoch.go); if the
--           shard's epoch is another now (Redis changed again meanwhile), nothing is written
-- ARGV[3..] records: (ref, value, rank) for each record MySQL has
--           finish:  (status, version, scopes) for each SKU of KEYS[3..]; status "" for a SKU whose
--                    submit was rolled back, scopes "scope=t,a,r,s;scope=t,a,r,s" as in the events
--
-- Returns {0} when the product is verified under the current epoch already (nothing changed), {-3}
-- when the epoch moved (read MySQL again under the new one), else records: {2, records set};
-- finish: {1, SKUs taken from MySQL} when Redis had nothing of the product (a rebuild: no epoch
-- mark, no SKU MySQL knows), {2, SKUs taken from MySQL} when it had (a verification).
local rec = KEYS[1]
local epoch = redis.call('GET', KEYS[2])
if epoch and redis.call('HGET', rec, 'ep') == epoch then
  return {0}
end
if epoch ~= ARGV[2] then
  return {-3}
end

local function rank(value)
  local state = string.match(value, '^([^#]*)#')
  if state == 'rollback' or state == 'r' or state == 'f' or state == 'c' then
    return 2
  end
  return 1
end

local mode = ARGV[1]
if mode == 'records' then
  local set = 0
  for i = 3, #ARGV, 3 do
    local ref, value, rk = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
    local cur = redis.call('HGET', rec, ref)
    if not cur or rank(cur) < rk then
      redis.call('HSET', rec, ref, value)
      set = set + 1
    end
  end
  return {2, set}
end

if mode ~= 'finish' then
  return redis.error_reply('stock_load.lua: unknown mode ' .. tostring(mode))
end
-- Only a rebuild (for logs and metrics): Redis had no epoch mark and no SKU of the product.
local rebuilt = not redis.call('HGET', rec, 'ep')
local taken = 0
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 3
  local status, ver, snap = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  local k = KEYS[i]
  local cur = tonumber(redis.call('HGET', k, 'ver'))
  if cur then
    rebuilt = false
  end
  if not cur or ver > cur then
    redis.call('DEL', k)
    redis.call('HSET', k, 'ver', ver)
    if status ~= '' then
      redis.call('HSET', k, 'st', status)
    end
    for scope, t, av, r, s in string.gmatch(snap, '([^=;]+)=(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+)') do
      redis.call('HSET', k, scope .. ':t', t, scope .. ':a', av, scope .. ':r', r, scope .. ':s', s)
    end
    taken = taken + 1
  end
end
redis.call('HSET', rec, 'ep', epoch)
return {rebuilt and 1 or 2, taken}
