-- Take the next number of one sequence for one WHMCS document, or return the one it already has.
-- All or nothing: the counter, the ledger entry and the reference index change together.
--
-- KEYS[1] {seq:S}:settings       hash: increment, format, padding, reset, routing flag
-- KEYS[2] {seq:S}:stats          hash: issued, credit_notes, replays
-- KEYS[3] {seq:S}:refs:<doc>:<system>   hash: reference -> ledger id
-- KEYS[4] {seq:S}:periods        set of periods
-- KEYS[5] {seq:S}:counter:<P>    KEYS[6] {seq:S}:ledger:<P>    KEYS[7] {seq:S}:ledger-order:<P>
--         where P is the period of the document date under the reset the caller expects
-- KEYS[8] {seq:S}:guard          hash: initialised, seen:<P> (numbering/guard.py)
--
-- ARGV[1] document (invoice | credit_note)   ARGV[2] system     ARGV[3] reference
-- ARGV[4] document date YYYY-MM-DD            ARGV[5] period P   ARGV[6] reset P was chosen by
-- ARGV[7] now (ISO 8601 UTC)                  ARGV[8] largest number allowed (< 2^53)
-- ARGV[9] sequence name S
--
-- Returns {"new", entry_json} | {"replay", entry_json} | {"error", code, detail...}
--   codes: uninitialized (no settings yet), moved (credit notes are not numbered in S),
--          reset (the sequence resets otherwise: detail = its reset; choose P again),
--          period (reference already numbered in another period: detail = its id),
--          exhausted (next number past the cap or the padding: detail = last number),
--          not_initialised (no number ever issued and the numbering never set explicitly),
--          behind (a WHMCS shows a number of P above the counter: detail = guard's seen:<P>)
--
-- Numbers stay below 2^53 so Lua's doubles hold them exactly; they travel as strings in JSON.

local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then
  return {'error', 'uninitialized'}
end
local s = {}
for i = 1, #raw, 2 do
  s[raw[i]] = raw[i + 1]
end

local seq, document = ARGV[9], ARGV[1]
if document == 'credit_note' then
  local served = (seq == 'invoice' and s['credit_notes'] == '1')
    or (seq == 'credit_note' and s['dedicated'] == '1')
  if not served then
    return {'error', 'moved'}
  end
end
if s['reset'] ~= ARGV[6] then
  return {'error', 'reset', s['reset']}
end

local period = ARGV[5]
local counter_key, ledger_key, order_key = KEYS[5], KEYS[6], KEYS[7]

local existing = redis.call('HGET', KEYS[3], ARGV[3])
if existing then
  local existing_period, existing_number = string.match(existing, '^[^:]+:([^:]+):(%d+)$')
  if existing_period ~= period then
    return {'error', 'period', existing}
  end
  -- A write of our own, so the WAITAOF sent after this script waits until the original
  -- allocation (an earlier offset) is on disk and on the replicas too.
  redis.call('HINCRBY', KEYS[2], 'replays', 1)
  return {'replay', redis.call('HGET', ledger_key, existing_number)}
end

local increment = tonumber(s['increment'])
local padding = tonumber(s['padding'])
local current = tonumber(redis.call('GET', counter_key) or '0')
-- Never number from a store that may be behind reality (lost data, an old backup).
if redis.call('HEXISTS', KEYS[8], 'initialised') == 0 then
  if redis.call('HEXISTS', KEYS[2], 'issued') == 0 and redis.call('EXISTS', counter_key) == 0 then
    return {'error', 'not_initialised'}
  end
  redis.call('HSET', KEYS[8], 'initialised', ARGV[7] .. ' numbers issued before the guard')
end
local seen = redis.call('HGET', KEYS[8], 'seen:' .. period)
if seen and tonumber(string.match(seen, '^(%d+)')) > current then
  return {'error', 'behind', seen}
end
local number = current + increment
local digits = string.format('%.0f', number)
if number > tonumber(ARGV[8]) or (padding > 0 and #digits > padding) then
  return {'error', 'exhausted', string.format('%.0f', current)}
end
if padding > #digits then
  digits = string.rep('0', padding - #digits) .. digits
end

local date = ARGV[4]
local parts = {
  ['{YEAR}'] = string.sub(date, 1, 4), ['{MONTH}'] = string.sub(date, 6, 7),
  ['{DAY}'] = string.sub(date, 9, 10), ['{NUMBER}'] = digits,
}
local formatted = string.gsub(s['format'], '{%u+}', function(tag) return parts[tag] end)

local id = seq .. ':' .. period .. ':' .. string.format('%.0f', number)
local entry = cjson.encode({
  id = id, number = string.format('%.0f', number), previous = string.format('%.0f', current),
  formatted = formatted, sequence = seq, period = period, system = ARGV[2],
  document = document, reference = ARGV[3], date = date, status = 'issued', issued_at = ARGV[7],
})

redis.call('INCRBY', counter_key, increment)
redis.call('HSET', ledger_key, string.format('%.0f', number), entry)
redis.call('ZADD', order_key, number, string.format('%.0f', number))
redis.call('HSET', KEYS[3], ARGV[3], id)
redis.call('SADD', KEYS[4], period)
redis.call('HINCRBY', KEYS[2], 'issued', 1)
if document == 'credit_note' then
  redis.call('HINCRBY', KEYS[2], 'credit_notes', 1)
end
return {'new', entry}
