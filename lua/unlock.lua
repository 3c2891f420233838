-- unlock.lua: releases a lock only if it is still held by the caller's token.
--
-- KEYS[1] the lock key
-- ARGV[1] the token the lock was taken with
--
-- Returns {0} when released, {1} when the lock had expired or belongs to someone else.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {0}
end
return {1}
