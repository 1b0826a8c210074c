-- Record one occurrence of a warning: create it, or bump its count and last-seen time.
-- A warning that happens again after it was acknowledged is unacknowledged again.
--
-- KEYS[1]  {warnings}:warning:<id>   hash
-- KEYS[2]  {warnings}:index          sorted set  id -> last seen
-- KEYS[3]  {warnings}:open:<type>    set         ids of the unacknowledged warnings of the type
-- KEYS[4]  {warnings}:open-types     set         types with an open set
-- ARGV[1]  id   ARGV[2] type   ARGV[3] system ("" for none)   ARGV[4] message
-- ARGV[5]  code ("" for none)   ARGV[6] now (ISO 8601)   ARGV[7] now (unix seconds)
-- Returns the new count.
if redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[6]) == 1 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'type', ARGV[2], 'system', ARGV[3])
end
redis.call('HSET', KEYS[1], 'message', ARGV[4], 'code', ARGV[5], 'last_seen', ARGV[6],
  'acked', '0')
redis.call('HDEL', KEYS[1], 'acked_at')
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'count', 1)
