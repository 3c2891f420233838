-- stock_voucher_index.lua: which activity products a voucher touched, so its rollback finds them all,
-- and whether it was rolled back, so a rollback that comes before the voucher's op still wins.
--
-- KEYS[1] the voucher's set: "a:p" per product it touched, and "!" once it was rolled back
-- ARGV[1] op: index | rollback
-- ARGV[2] index: the product "a:p" about to be touched
-- ARGV[3] seconds the set is kept after its last change
--
-- Returns index: {0} noted, {1} refused (rolled back: the op must not run);
--         rollback: {0, product…}, the products touched so far (the set is marked rolled back first).
local k, op = KEYS[1], ARGV[1]
if op == 'index' then
  if redis.call('SISMEMBER', k, '!') == 1 then
    return {1}
  end
  redis.call('SADD', k, ARGV[2])
  redis.call('EXPIRE', k, ARGV[3])
  return {0}
elseif op == 'rollback' then
  redis.call('SADD', k, '!')
  redis.call('EXPIRE', k, ARGV[3])
  local reply = {0}
  for _, m in ipairs(redis.call('SMEMBERS', k)) do
    if m ~= '!' then
      reply[#reply + 1] = m
    end
  end
  return reply
end
return redis.error_reply('stock_voucher_index.lua: unknown op ' .. tostring(op))
