-- Move one ledger entry issued -> confirmed | void, recording when and by whom.
--
-- KEYS[1] {seq:S}:ledger:<period>   hash: number -> JSON entry
-- KEYS[2] {seq:S}:stats             hash (replays: bumped on idempotent repeats, see below)
-- KEYS[3] {ser:R}:S:events          list: the hash-chained ledger events (sealed by chain.py)
-- KEYS[4] {ser:R}:S:voids:<period>  sorted set: the voided numbers (the gap report's index)
--
-- ARGV[1] number   ARGV[2] action (confirm | void)   ARGV[3] actor kind (admin | agent)
-- ARGV[4] actor system ('' for admins)   ARGV[5] actor label (for the record)
-- ARGV[6] now (ISO 8601 UTC)   ARGV[7] invoicenum (confirm) or reason (void)
--
-- Returns {"changed", entry_json} | {"same", entry_json} | {"error", code, entry_json?}
--   codes: notfound, forbidden (another system's number, or an agent voiding a confirmed one),
--          mismatch (invoicenum differs from the formatted number), void (confirming a void
--          number), confirmed-differently is impossible (invoicenum must equal formatted).

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return {'error', 'notfound'}
end
local entry = cjson.decode(raw)
local action, kind = ARGV[2], ARGV[3]
if kind ~= 'admin' and entry['system'] ~= ARGV[4] then
  return {'error', 'forbidden'}
end

local function repeat_ok()
  -- An idempotent repeat still writes, so the caller's WAITAOF covers the original change.
  redis.call('HINCRBY', KEYS[2], 'replays', 1)
  return {'same', raw}
end

if action == 'confirm' then
  if entry['formatted'] ~= ARGV[7] then
    return {'error', 'mismatch', raw}
  end
  if entry['status'] == 'confirmed' then
    return repeat_ok()
  end
  if entry['status'] == 'void' then
    return {'error', 'void', raw}
  end
  entry['status'] = 'confirmed'
  entry['confirmed_at'] = ARGV[6]
  entry['confirmed_by'] = ARGV[5]
else
  if entry['status'] == 'void' then
    return repeat_ok()
  end
  if entry['status'] == 'confirmed' and kind ~= 'admin' then
    return {'error', 'confirmed', raw}
  end
  entry['status'] = 'void'
  redis.call('ZADD', KEYS[4], tonumber(ARGV[1]), ARGV[1])
  entry['void_reason'] = ARGV[7]
  entry['voided_at'] = ARGV[6]
  entry['voided_by'] = ARGV[5]
end
local encoded = cjson.encode(entry)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
local event = {seq = redis.call('LLEN', KEYS[3]), at = ARGV[6], id = entry['id'], by = ARGV[5]}
if action == 'confirm' then
  event['type'], event['invoicenum'] = 'confirmed', ARGV[7]
else
  event['type'], event['reason'] = 'voided', ARGV[7]
end
redis.call('RPUSH', KEYS[3], cjson.encode(event))
return {'changed', encoded}
