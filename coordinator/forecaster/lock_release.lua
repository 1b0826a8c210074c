-- Release a lock, only by its owner (a late worker must not free a newer sync's lock).
--
-- KEYS[1]  {sys:<name>}:sync:lock (or {sys:<name>}:central-poll:lock)
-- ARGV[1]  sync id (the owner's id)
-- Returns 1 when released, 0 when held by someone else or gone.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
