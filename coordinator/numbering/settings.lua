-- Change the settings of one sequence and, optionally, raise next_number in one period;
-- append the audit record in the same step, so a change is never without its record.
-- The caller checked that the new settings cannot print a number twice (overlap.py) against
-- the settings it read; `expected` makes that check hold here, atomically: if any of those
-- fields changed meanwhile, nothing is written and the caller reads and checks again.
--
-- KEYS[1] {ser:R}:S:settings   KEYS[2] {ser:R}:S:stats        KEYS[3] {ser:R}:S:counter:<period>
-- KEYS[4] {ser:R}:S:skips:<period>   KEYS[5] {ser:R}:S:audit  KEYS[6] {ser:R}:S:periods
-- KEYS[7] {ser:R}:S:ledger-order:<period>   KEYS[8] {ser:R}:<other sequence>:settings
-- KEYS[9] {ser:R}:S:events   list: the hash-chained ledger events (sealed by chain.py)
--
-- ARGV[1] JSON object of changed settings (increment, format, padding, reset; all strings)
-- ARGV[2] period the next_number applies to   ARGV[3] next_number ('' = unchanged)
-- ARGV[4] actor label   ARGV[5] now (ISO 8601 UTC)   ARGV[6] largest number allowed
-- ARGV[7] JSON list of [1 (KEYS[1]) | 8 (KEYS[8]), field, value the caller checked against]
--
-- Returns {"ok", audit_json} | {"error", code, detail...}
--   codes: uninitialized, changed (settings changed since the caller read them: check again),
--          reset (reset changed after numbers were issued),
--          period (the period does not match the reset: detail = reset),
--          backwards (next_number below the period's next: detail = next, counter, last issued
--          number or ''), exhausted (the next number would not fit the padding or the cap)

local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then
  return {'error', 'uninitialized'}
end
local before = {}
for i = 1, #raw, 2 do
  before[raw[i]] = raw[i + 1]
end
for _, check in ipairs(cjson.decode(ARGV[7])) do
  if (redis.call('HGET', KEYS[check[1]], check[2]) or '') ~= check[3] then
    return {'error', 'changed'}
  end
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
    local last = redis.call('ZRANGE', KEYS[7], -1, -1)[1] or ''
    return {'error', 'backwards', string.format('%.0f', next_after),
            string.format('%.0f', counter), last}
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
  redis.call('RPUSH', KEYS[9], cjson.encode({
    seq = redis.call('LLEN', KEYS[9]), type = 'next_number_raised', at = ARGV[5], by = ARGV[4],
    period = period, counter = string.format('%.0f', counter),
    moved_to = string.format('%.0f', moved_to),
  }))
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
redis.call('RPUSH', KEYS[9], cjson.encode({
  seq = redis.call('LLEN', KEYS[9]), type = 'settings_changed', at = ARGV[5], by = ARGV[4],
  audit = record,
}))
return {'ok', record}
