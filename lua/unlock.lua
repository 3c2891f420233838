-- unlock.lua: releases a lock only if it is still held by the caller's token.
--
-- KEYS[1] the lock key
-- ARGV[1] the token the lock was taken with
--
-- Returns 1 when released, 0 when the lock had expired or belongs to someone else.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
