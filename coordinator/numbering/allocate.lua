-- Take the next number of one sequence for one WHMCS document, or return the one it already has.
-- All or nothing: the counter, the ledger entry, the reference index and the formatted-number
-- index change together; every key is in the series' slot {ser:R}.
--
-- KEYS[1] {ser:R}:S:settings     hash: increment, format, padding, reset, routing flag
-- KEYS[2] {ser:R}:S:stats        hash: issued, credit_notes, replays
-- KEYS[3] {ser:R}:S:refs:<doc>:<system>   hash: reference -> ledger id
-- KEYS[4] {ser:R}:S:periods      set of periods
-- KEYS[5] {ser:R}:S:counter:<P>  KEYS[6] {ser:R}:S:ledger:<P>  KEYS[7] {ser:R}:S:ledger-order:<P>
--         where P is the period of the document date under the reset the caller expects
-- KEYS[8] {ser:R}:members        hash: system -> open | closed
-- KEYS[9] {ser:R}:formatted      hash: formatted number -> ledger id (the whole series)
-- KEYS[10] {ser:R}:S:events      list: the hash-chained ledger events (sealed by chain.py)
-- KEYS[11] {ser:R}:S:guard       hash: initialised, seen:<P> (numbering/guard.py)
--
-- ARGV[1] document (invoice | credit_note)   ARGV[2] system     ARGV[3] reference
-- ARGV[4] document date YYYY-MM-DD            ARGV[5] period P   ARGV[6] reset P was chosen by
-- ARGV[7] now (ISO 8601 UTC)                  ARGV[8] largest number allowed (< 2^53)
-- ARGV[9] sequence name S                     ARGV[10] id prefix ('' in default, else 'R/')
-- ARGV[11] '1' when a system without a members field is served here (the default series)
--
-- Returns {"new", entry_json} | {"replay", entry_json} | {"error", code, detail...}
--   codes: uninitialized (no settings yet), member (the system is not served by this series:
--          detail = its members field or ''), moved (credit notes are not numbered in S),
--          reset (the sequence resets otherwise: detail = its reset; choose P again),
--          period (reference already numbered in another period: detail = its id),
--          exhausted (next number past the cap or the padding: detail = last number),
--          duplicate (the formatted number is already used in the series: detail = it, its id),
--          not_initialised (the series' numbering was never set explicitly, or was restored),
--          behind (a WHMCS shows a number of P above the counter: detail = guard's seen:<P>)
--
-- Numbers stay below 2^53 so Lua's doubles hold them exactly; they travel as strings in JSON.

local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then
  return {'error', 'uninitialized'}
end
local member = redis.call('HGET', KEYS[8], ARGV[2])
if not (member == 'open' or (not member and ARGV[11] == '1')) then
  return {'error', 'member', member or ''}
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
-- backup guard (numbering/guard.py): never number from a store that may be behind reality
-- (lost data, an old backup). Replays above still answer; only new numbers wait.
local guard = redis.call('HMGET', KEYS[11], 'initialised', 'seen:' .. period)
if not guard[1] then
  return {'error', 'not_initialised'}
end
if guard[2] and tonumber(string.match(guard[2], '^(%d+)')) > current then
  return {'error', 'behind', guard[2]}
end
-- end backup guard
local number = current + increment
local digits = string.format('%.0f', number)
if number > tonumber(ARGV[8]) or (padding > 0 and #digits > padding) then
  return {'error', 'exhausted', string.format('%.0f', current)}
end
local number_text = digits
if padding > #digits then
  digits = string.rep('0', padding - #digits) .. digits
end

local date = ARGV[4]
local parts = {
  ['{YEAR}'] = string.sub(date, 1, 4), ['{MONTH}'] = string.sub(date, 6, 7),
  ['{DAY}'] = string.sub(date, 9, 10), ['{NUMBER}'] = digits,
}
local formatted = string.gsub(s['format'], '{%u+}', function(tag) return parts[tag] end)

local id = ARGV[10] .. seq .. ':' .. period .. ':' .. number_text
-- The first write: when the string is taken, nothing has changed and no number is taken.
if redis.call('HSETNX', KEYS[9], formatted, id) == 0 then
  return {'error', 'duplicate', formatted, redis.call('HGET', KEYS[9], formatted)}
end
local entry = cjson.encode({
  id = id, number = number_text, previous = string.format('%.0f', current),
  formatted = formatted, sequence = seq, period = period, system = ARGV[2],
  document = document, reference = ARGV[3], date = date, status = 'issued', issued_at = ARGV[7],
})

redis.call('INCRBY', counter_key, increment)
redis.call('HSET', ledger_key, number_text, entry)
redis.call('ZADD', order_key, number, number_text)
redis.call('HSET', KEYS[3], ARGV[3], id)
redis.call('SADD', KEYS[4], period)
redis.call('HINCRBY', KEYS[2], 'issued', 1)
if document == 'credit_note' then
  redis.call('HINCRBY', KEYS[2], 'credit_notes', 1)
end
-- ledger chain: the 'issued' event, appended in this same atomic step (sealed by chain.py)
redis.call('RPUSH', KEYS[10], cjson.encode({
  seq = redis.call('LLEN', KEYS[10]), type = 'issued', at = ARGV[7], id = id,
  number = number_text, formatted = formatted, system = ARGV[2], document = document,
  reference = ARGV[3], date = date, period = period,
}))
-- end ledger chain
return {'new', entry}
