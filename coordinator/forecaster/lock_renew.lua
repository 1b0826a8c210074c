-- Extend a sync lock, only if its owner still holds it.
--
-- KEYS[1]  {sys:<name>}:sync:lock
-- ARGV[1]  sync id      ARGV[2]  lifetime (ms)
-- Returns 1 when extended, 0 when the lock was lost (expired, taken by another sync).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
