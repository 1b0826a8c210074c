-- Fence one sequence of the layout before series (release 6d52368 and older): after this, code
-- of that release cannot take a number from it (its allocation script refuses a reset it does
-- not know, and it never overwrites an existing settings field), so the data can be copied.
-- Idempotent: the reset it had is kept in `migrated_reset` the first time only.
--
-- KEYS[1] {seq:S}:settings
-- ARGV[1] the fence value of `reset` ('migrated')
--
-- Returns the settings hash after fencing, as HGETALL does.

local reset = redis.call('HGET', KEYS[1], 'reset')
if reset ~= ARGV[1] then
  if reset then
    redis.call('HSET', KEYS[1], 'migrated_reset', reset)
  end
  redis.call('HSET', KEYS[1], 'reset', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
