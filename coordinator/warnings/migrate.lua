-- Move one warning of the previous release to this release's keys (idempotent).
-- A warning already under the new key (raised by this release meanwhile) wins; the old copy
-- is dropped. The index keeps the later of the two last-seen times.
--
-- KEYS[1]  warning:<id>              hash        the previous release's warning
-- KEYS[2]  warnings                  sorted set  the previous release's index
-- KEYS[3]  {warnings}:warning:<id>   hash        this release's warning
-- KEYS[4]  {warnings}:index          sorted set  this release's index
-- ARGV[1]  id
-- Returns 1 when the hash was moved, 0 otherwise.
local moved = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('RENAME', KEYS[1], KEYS[3])
    moved = 1
  else
    redis.call('DEL', KEYS[1])
  end
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if score and redis.call('EXISTS', KEYS[3]) == 1 then
  local current = redis.call('ZSCORE', KEYS[4], ARGV[1])
  if not current or tonumber(current) < tonumber(score) then
    redis.call('ZADD', KEYS[4], score, ARGV[1])
  end
end
redis.call('ZREM', KEYS[2], ARGV[1])
return moved
