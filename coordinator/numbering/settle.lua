-- Move the entries of settled numbers of one period into one settled block
-- (numbering/settled.py): all or nothing, only when each entry is still exactly what the
-- caller packed and nobody settled this period meanwhile.
--
-- KEYS[1] {ser:R}:S:ledger:<P>          hash: number -> JSON entry
-- KEYS[2] {ser:R}:S:ledger-order:<P>    sorted set of the numbers of KEYS[1]
-- KEYS[3] {ser:R}:S:settled:<P>         hash: count, upto
-- KEYS[4] {ser:R}:S:settled-blocks:<P>  sorted set: "<first>:<last>" scored by first
-- KEYS[5] {ser:R}:S:settled-block:<P>:<first>   string: the block written here
-- KEYS[6] {ser:R}:S:ledger-order-rebuild:<P>    KEYS[2] is copied there and renamed back
--
-- ARGV[1] upto the caller read ('0' when none)   ARGV[2] upto after this block (its last number)
-- ARGV[3] SHA1 (hex) of the entries moved, each followed by a newline, in number order
-- ARGV[4] the block (bytes)   ARGV[5] its first number   ARGV[6..] the numbers moved
--
-- Returns {"ok", count moved} | {"stale"} (upto moved meanwhile) | {"changed"} (an entry
--   changed or went meanwhile): nothing written unless "ok".

if (redis.call('HGET', KEYS[3], 'upto') or '0') ~= ARGV[1] then
  return {'stale'}
end
local numbers = {unpack(ARGV, 6)}
local raws = redis.call('HMGET', KEYS[1], unpack(numbers))
for i = 1, #numbers do
  if not raws[i] then
    return {'changed'}
  end
end
if redis.sha1hex(table.concat(raws, '\n') .. '\n') ~= ARGV[3] then
  return {'changed'}
end
redis.call('SET', KEYS[5], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[5] .. ':' .. ARGV[2])
redis.call('HDEL', KEYS[1], unpack(numbers))
redis.call('ZREM', KEYS[2], unpack(numbers))
-- ZREM leaves the sorted set's hash table at its largest size (~10 bytes a number ever held):
-- a copy has the size of what stays.
if redis.call('ZRANGESTORE', KEYS[6], KEYS[2], 0, -1) > 0 then
  redis.call('RENAME', KEYS[6], KEYS[2])
end
redis.call('HINCRBY', KEYS[3], 'count', #numbers)
redis.call('HSET', KEYS[3], 'upto', ARGV[2])
return {'ok', #numbers}
