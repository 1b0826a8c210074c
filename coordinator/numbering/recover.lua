-- Recover one period of one sequence from the evidence of the numbers in use (the systems'
-- WHMCS, agents' journals): write each number the ledger lacks as a 'recovered' entry with the
-- reason, and raise the counter to the highest number in use. Never lowers the counter, never
-- replaces a ledger entry, a formatted-number index entry or a reference's number. One step,
-- with its chain events and its audit record; every key is in the series' slot {ser:R}.
--
-- KEYS[1] {ser:R}:S:stats        KEYS[2] {ser:R}:S:counter:<P>   KEYS[3] {ser:R}:S:ledger:<P>
-- KEYS[4] {ser:R}:S:ledger-order:<P>   KEYS[5] {ser:R}:S:periods   KEYS[6] {ser:R}:formatted
-- KEYS[7] {ser:R}:S:events       KEYS[8] {ser:R}:S:audit          KEYS[9] {ser:R}:S:settings
-- KEYS[10] {ser:R}:S:skips:<P>
-- KEYS[11..] {ser:R}:S:refs:<document>:<system>, named by the entries' `refs` (11 = first)
--
-- ARGV[1] period P   ARGV[2] now (ISO 8601 UTC)   ARGV[3] actor   ARGV[4] reason
-- ARGV[5] sequence name S   ARGV[6] id prefix ('' in default, else 'R/')
-- ARGV[7] JSON list of {number, formatted, system, document, reference, source, refs}
--         (number as a string; refs: index into KEYS of the reference index, 0 for none)
-- ARGV[8] the highest number in use in P (the counter becomes at least this)
-- ARGV[9] JSON list of [after, moved_to]: numbers above the counter no source showed, recorded
--         as skips (the gap report lists them, with the audit record explaining the jump)
--
-- A recovered number inside a range an admin skipped (next_number raised past it) splits that
-- skip around it: the gap report then lists as skipped only the numbers nobody issued.
--
-- Returns {counter before, counter after, recovered, JSON list of skipped {number, why, ...}}

local period, now, actor, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local seq, prefix = ARGV[5], ARGV[6]
local increment = tonumber(redis.call('HGET', KEYS[9], 'increment') or '1')
local before = tonumber(redis.call('GET', KEYS[2]) or '0')
local highest = math.max(before, tonumber(ARGV[8]))
local recovered, skipped = 0, {}

local function split_skip(number)
  local skips = redis.call('HGETALL', KEYS[10])
  for i = 1, #skips, 2 do
    local after, moved_to = tonumber(skips[i]), tonumber(skips[i + 1])
    if after < number and number <= moved_to then
      redis.call('HDEL', KEYS[10], skips[i])
      if number - increment > after then
        redis.call('HSET', KEYS[10], skips[i], string.format('%.0f', number - increment))
      end
      if moved_to > number then
        redis.call('HSET', KEYS[10], string.format('%.0f', number), skips[i + 1])
      end
      return
    end
  end
end

for _, e in ipairs(cjson.decode(ARGV[7])) do
  local number = tonumber(e.number)
  local id = prefix .. seq .. ':' .. period .. ':' .. e.number
  if number > highest then
    highest = number
  end
  local existing = redis.call('HGET', KEYS[3], e.number)
  local owner = redis.call('HGET', KEYS[6], e.formatted)
  if existing then
    table.insert(skipped, {number = e.number, why = 'in_ledger'})
  elseif owner then
    table.insert(skipped, {number = e.number, why = 'formatted_taken', owner = owner})
  else
    redis.call('HSET', KEYS[6], e.formatted, id)
    redis.call('HSET', KEYS[3], e.number, cjson.encode({
      id = id, number = e.number, previous = string.format('%.0f', math.max(0, number - increment)),
      formatted = e.formatted, sequence = seq, period = period, system = e.system,
      document = e.document, reference = e.reference, date = '', status = 'recovered',
      issued_at = now, recovered_at = now, recovered_by = actor, recovered_from = e.source,
      recovery_reason = reason,
    }))
    redis.call('ZADD', KEYS[4], number, e.number)
    redis.call('HINCRBY', KEYS[1], 'issued', 1)
    split_skip(number)
    if e.refs > 0 and e.reference ~= '' then
      -- A reference keeps the number it has; a new one answers the recovered number on replay.
      redis.call('HSETNX', KEYS[e.refs], e.reference, id)
    end
    redis.call('RPUSH', KEYS[7], cjson.encode({
      seq = redis.call('LLEN', KEYS[7]), type = 'recovered', at = now, by = actor, id = id,
      number = e.number, formatted = e.formatted, system = e.system, document = e.document,
      reference = e.reference, period = period, source = e.source, reason = reason,
    }))
    recovered = recovered + 1
  end
end

redis.call('SADD', KEYS[5], period)
for _, hole in ipairs(cjson.decode(ARGV[9])) do
  if tonumber(hole[1]) >= before then
    redis.call('HSETNX', KEYS[10], hole[1], hole[2])
  end
end
local before_text, after_text = string.format('%.0f', before), string.format('%.0f', highest)
if highest > before then
  redis.call('SET', KEYS[2], after_text)
  redis.call('RPUSH', KEYS[7], cjson.encode({
    seq = redis.call('LLEN', KEYS[7]), type = 'next_number_raised', at = now, by = actor,
    period = period, counter = before_text, moved_to = after_text, reason = reason,
  }))
end
redis.call('RPUSH', KEYS[8], cjson.encode({
  at = now, by = actor, period = period, reason = reason, recovered = recovered,
  before = {next_number = string.format('%.0f', before + increment)},
  after = {next_number = string.format('%.0f', highest + increment)},
}))
return {before_text, after_text, recovered, cjson.encode(skipped)}
