-- Switch credit notes between their own sequence and the invoice sequence (`dedicated`), in
-- one step: both sequences live in the series' slot.
--
-- Refused while the sequence that numbers credit notes now has numbered any: their reference
-- index lives in that sequence, and a replay routed to the other would not find it and would
-- take a second number. Re-running the same switch repairs a half-switched state left by an
-- older release (where the two halves were separate steps).
--
-- KEYS[1] {ser:R}:invoice:settings      KEYS[2] {ser:R}:invoice:stats
-- KEYS[3] {ser:R}:credit_note:settings  KEYS[4] {ser:R}:credit_note:stats
-- KEYS[5] {ser:R}:invoice:audit         KEYS[6] {ser:R}:credit_note:audit
--
-- ARGV[1] '1' dedicated | '0' shared   ARGV[2] audit JSON appended to both audits on a change
-- ARGV[3] JSON list of [key index, field, value the caller checked the formats against]
--
-- Returns {"ok", changed (0|1)} | {"error", "in_use", count} | {"error", "changed"}
--         | {"error", "uninitialized"}

if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[3]) == 0 then
  return {'error', 'uninitialized'}
end
for _, check in ipairs(cjson.decode(ARGV[3])) do
  if (redis.call('HGET', KEYS[check[1]], check[2]) or '') ~= check[3] then
    return {'error', 'changed'}
  end
end
local dedicated = ARGV[1]
-- source: the sequence that must stop numbering credit notes; target: the one that starts.
local source_settings, source_stats, source_field = KEYS[1], KEYS[2], 'credit_notes'
local target_settings, target_field = KEYS[3], 'dedicated'
if dedicated == '0' then
  source_settings, source_stats, source_field = KEYS[3], KEYS[4], 'dedicated'
  target_settings, target_field = KEYS[1], 'credit_notes'
end
local source_open = redis.call('HGET', source_settings, source_field) == '1'
local target_open = redis.call('HGET', target_settings, target_field) == '1'
if not source_open and target_open then
  return {'ok', 0}
end
if source_open then
  local count = tonumber(redis.call('HGET', source_stats, 'credit_notes') or '0')
  if count > 0 then
    return {'error', 'in_use', tostring(count)}
  end
end
redis.call('HSET', source_settings, source_field, '0')
redis.call('HSET', target_settings, target_field, '1')
redis.call('RPUSH', KEYS[5], ARGV[2])
redis.call('RPUSH', KEYS[6], ARGV[2])
return {'ok', 1}
