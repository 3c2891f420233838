-- epoch.lua: stamps a shard's dataset epoch, "<run id>:<token>".
--
-- KEYS[1] the shard's epoch key
-- ARGV[1] the server's run id   ARGV[2] a fresh random token
--
-- The key keeps its value while it names this server's run id: every new connection stamps, and a
-- value that changed on each would force needless verifications. It is set anew when it is missing
-- (the dataset was flushed or lost in place, run id unchanged) or names another run id (a restart,
-- a failover, an older AOF or RDB): a new token makes every object's recorded epoch stale.
--
-- Returns {0, the epoch now in force}.
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  return {0, v}
end
v = ARGV[1] .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], v)
return {0, v}
