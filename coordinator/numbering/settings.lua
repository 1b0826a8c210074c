-- Change the settings of one sequence and, optionally, raise next_number in one period;
-- append the audit record in the same step, so a change is never without its record.
--
-- KEYS[1] {seq:S}:settings   KEYS[2] {seq:S}:stats        KEYS[3] {seq:S}:counter:<period>
-- KEYS[4] {seq:S}:skips:<period>   KEYS[5] {seq:S}:audit  KEYS[6] {seq:S}:periods
--
-- ARGV[1] JSON object of changed settings (increment, format, padding, reset; all strings)
-- ARGV[2] period the next_number applies to   ARGV[3] next_number ('' = unchanged)
-- ARGV[4] actor label   ARGV[5] now (ISO 8601 UTC)   ARGV[6] largest number allowed
--
-- Returns {"ok", audit_json} | {"error", code, detail...}
--   codes: uninitialized, reset (reset changed after numbers were issued),
--          period (the period does not match the reset: detail = reset),
--          backwards (next_number below the period's next: detail = next, counter),
--          exhausted (the next number would not fit the padding or the cap: detail = next)

local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then
  return {'error', 'uninitialized'}
end
local before = {}
for i = 1, #raw, 2 do
  before[raw[i]] = raw[i + 1]
end
local changes = cjson.decode(ARGV[1])
local after = {}
for k, v in pairs(before) do
  after[k] = v
end
for k, v in pairs(changes) do
  after[k] = v
end

local issued = tonumber(redis.call('HGET', KEYS[2], 'issued') or '0')
if after['reset'] ~= before['reset'] and issued > 0 then
  return {'error', 'reset'}
end

local period = ARGV[2]
local shapes = {never = '^all$', yearly = '^%d%d%d%d$', monthly = '^%d%d%d%d%-%d%d$'}
if not string.match(period, shapes[after['reset']]) then
  return {'error', 'period', after['reset']}
end

local increment = tonumber(after['increment'])
local counter = tonumber(redis.call('GET', KEYS[3]) or '0')
local next_before = counter + tonumber(before['increment'])
local next_after = counter + increment
if ARGV[3] ~= '' then
  local wanted = tonumber(ARGV[3])
  if wanted < next_after then
    return {'error', 'backwards', string.format('%.0f', next_after), string.format('%.0f', counter)}
  end
  next_after = wanted
end

local digits = string.format('%.0f', next_after)
local padding = tonumber(after['padding'])
if next_after > tonumber(ARGV[6]) or (padding > 0 and #digits > padding) then
  return {'error', 'exhausted', digits}
end

if next_after - increment > counter then
  -- Raising next_number skips numbers: remember the jump so the gap report explains it.
  local moved_to = next_after - increment
  redis.call('HSET', KEYS[4], string.format('%.0f', counter), string.format('%.0f', moved_to))
  redis.call('SET', KEYS[3], string.format('%.0f', moved_to))
  redis.call('SADD', KEYS[6], period)
end
for k, v in pairs(changes) do
  redis.call('HSET', KEYS[1], k, v)
end
before['next_number'] = string.format('%.0f', next_before)
after['next_number'] = string.format('%.0f', next_after)
local record = cjson.encode({
  at = ARGV[5], by = ARGV[4], period = period, before = before, after = after,
})
redis.call('RPUSH', KEYS[5], record)
return {'ok', record}
