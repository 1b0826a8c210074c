-- Put one warning in (or out of) its type's open set by what it is now: the one-time filling
-- of the open sets with the warnings raised before they existed. Atomic per warning, so an
-- acknowledgement or a new occurrence at the same time is never undone.
--
-- KEYS[1]  {warnings}:warning:<id>   hash
-- KEYS[2]  {warnings}:open:<type>    set   ids of the unacknowledged warnings of the type
-- KEYS[3]  {warnings}:open-types     set   types with an open set
-- ARGV[1]  id   ARGV[2] type
-- Returns 1 when the warning is open, 0 otherwise.
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HGET', KEYS[1], 'acked') ~= '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[2])
  return 1
end
redis.call('SREM', KEYS[2], ARGV[1])
return 0
