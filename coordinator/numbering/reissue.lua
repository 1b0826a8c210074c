-- Give a voided document a new number (an admin's audited reissue). All or nothing: the void
-- entry must still be void and still be its document's number in the reference index; then a
-- new number is taken exactly as allocate.lua takes one, the two entries name each other
-- (reissued_as / reissue_of), the reference index points at the new number and one
-- 'reissued' event joins the chain. Every key is in the series' slot {ser:R}.
--
-- KEYS[1] {ser:R}:S:settings     KEYS[2] {ser:R}:S:stats
-- KEYS[3] {ser:R}:S:refs:<doc>:<system>   (document and system of the void entry)
-- KEYS[4] {ser:R}:S:periods      KEYS[5] {ser:R}:S:counter:<P>
-- KEYS[6] {ser:R}:S:ledger:<P>   KEYS[7] {ser:R}:S:ledger-order:<P>
--         where P is the void entry's period (the new number is taken in it too)
-- KEYS[8] {ser:R}:members        KEYS[9] {ser:R}:formatted
-- KEYS[10] {ser:R}:S:events      list: the hash-chained ledger events (sealed by chain.py)
-- KEYS[11] {ser:R}:S:guard       hash: initialised, seen:<P> (numbering/guard.py)
--
-- ARGV[1] number of the void entry in P   ARGV[2] reason   ARGV[3] actor (for the record)
-- ARGV[4] now (ISO 8601 UTC)   ARGV[5] reset P was chosen by   ARGV[6] largest number allowed
-- ARGV[7] id prefix ('' in default, else 'R/')
-- ARGV[8] '1' when a system without a members field is served here (the default series)
--
-- Returns {"new", new_entry_json, void_entry_json} | {"error", code, detail}
--   codes: notfound, status (the entry is not void: detail = it), live (the document's number
--          in the reference index is another one: detail = its id or ''), uninitialized,
--          member (the system is not served here), moved (credit notes are not numbered in S),
--          reset (detail = the sequence's reset), exhausted (detail = last number),
--          duplicate (detail = the formatted number, its id),
--          not_initialised, behind (as allocate.lua: the store may be behind reality)

local old_raw = redis.call('HGET', KEYS[6], ARGV[1])
if not old_raw then
  return {'error', 'notfound'}
end
local old = cjson.decode(old_raw)
if old['status'] ~= 'void' then
  return {'error', 'status', old_raw}
end
local live = redis.call('HGET', KEYS[3], old['reference'])
if live ~= old['id'] then
  return {'error', 'live', live or ''}
end

local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then
  return {'error', 'uninitialized'}
end
local s = {}
for i = 1, #raw, 2 do
  s[raw[i]] = raw[i + 1]
end
local member = redis.call('HGET', KEYS[8], old['system'])
if not (member == 'open' or (not member and ARGV[8] == '1')) then
  return {'error', 'member', member or ''}
end
local seq, document, period = old['sequence'], old['document'], old['period']
if document == 'credit_note' and not ((seq == 'invoice' and s['credit_notes'] == '1')
    or (seq == 'credit_note' and s['dedicated'] == '1')) then
  return {'error', 'moved'}
end
if s['reset'] ~= ARGV[5] then
  return {'error', 'reset', s['reset']}
end

local increment, padding = tonumber(s['increment']), tonumber(s['padding'])
local current = tonumber(redis.call('GET', KEYS[5]) or '0')
-- backup guard (numbering/guard.py), as in allocate.lua: a new number waits while the store
-- may be behind reality (lost data, an old backup).
local guard = redis.call('HMGET', KEYS[11], 'initialised', 'seen:' .. period)
if not guard[1] then
  return {'error', 'not_initialised'}
end
if guard[2] and tonumber(string.match(guard[2], '^(%d+)')) > current then
  return {'error', 'behind', guard[2]}
end
-- end backup guard
local number = current + increment
local number_text = string.format('%.0f', number)
if number > tonumber(ARGV[6]) or (padding > 0 and #number_text > padding) then
  return {'error', 'exhausted', string.format('%.0f', current)}
end
local digits = string.rep('0', padding - #number_text) .. number_text
local date = old['date']
local formatted = string.gsub(s['format'], '{%u+}', function(tag)
  return ({['{YEAR}'] = string.sub(date, 1, 4), ['{MONTH}'] = string.sub(date, 6, 7),
           ['{DAY}'] = string.sub(date, 9, 10), ['{NUMBER}'] = digits})[tag]
end)
local id = ARGV[7] .. seq .. ':' .. period .. ':' .. number_text
-- The first write: when the string is taken, nothing has changed and no number is taken.
if redis.call('HSETNX', KEYS[9], formatted, id) == 0 then
  return {'error', 'duplicate', formatted, redis.call('HGET', KEYS[9], formatted)}
end

local entry = cjson.encode({
  id = id, number = number_text, previous = string.format('%.0f', current),
  formatted = formatted, sequence = seq, period = period, system = old['system'],
  document = document, reference = old['reference'], date = date, status = 'issued',
  issued_at = ARGV[4], reissue_of = old['id'], reissue_reason = ARGV[2], reissued_by = ARGV[3],
})
old['reissued_as'], old['reissued_at'], old['reissued_by'] = id, ARGV[4], ARGV[3]
local old_encoded = cjson.encode(old)

redis.call('INCRBY', KEYS[5], increment)
redis.call('HSET', KEYS[6], number_text, entry, ARGV[1], old_encoded)
redis.call('ZADD', KEYS[7], number, number_text)
redis.call('HSET', KEYS[3], old['reference'], id)
redis.call('SADD', KEYS[4], period)
redis.call('HINCRBY', KEYS[2], 'issued', 1)
if document == 'credit_note' then
  redis.call('HINCRBY', KEYS[2], 'credit_notes', 1)
end
redis.call('RPUSH', KEYS[10], cjson.encode({
  seq = redis.call('LLEN', KEYS[10]), type = 'reissued', at = ARGV[4], id = id,
  number = number_text, formatted = formatted, system = old['system'], document = document,
  reference = old['reference'], date = date, period = period, reissue_of = old['id'],
  reason = ARGV[2], by = ARGV[3],
}))
return {'new', entry, old_encoded}
