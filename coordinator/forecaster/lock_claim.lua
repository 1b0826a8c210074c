-- Hand a system's sync lock from the queued job to the worker running it.
--
-- The lock is taken (SET NX) when a sync is requested, holding the sync's id. The worker that
-- picks the job up claims it: if the lock still holds this id, or has lapsed and nobody else
-- took it, it becomes ours with the running lifetime. Held by another sync: refuse.
--
-- KEYS[1]  {sys:<name>}:sync:lock
-- ARGV[1]  sync id      ARGV[2]  lifetime (ms)
-- Returns 1 when claimed, 0 when another sync holds the system.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
