-- probe.lua: the smallest grab-shaped script, used to measure what Redis itself can do.
-- It does the same kind of work as grab.lua (a check, a pop, a record, an event) with no
-- business rules, so the engine's overhead can be read as a ratio against it.
--
-- KEYS[1] share list   KEYS[2] grabbed hash   KEYS[3] event stream
-- ARGV[1] user id      ARGV[2] now, unix ms
--
-- Returns {0, share} when granted, {1, share} for a repeat, {5} when the list is empty.
local prev = redis.call('HGET', KEYS[2], ARGV[1])
if prev then
  return {1, prev}
end
local share = redis.call('LPOP', KEYS[1])
if not share then
  return {5}
end
redis.call('HSET', KEYS[2], ARGV[1], share)
redis.call('XADD', KEYS[3], '*', 'u', ARGV[1], 's', share, 'at', ARGV[2])
return {0, share}
