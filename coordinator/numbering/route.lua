-- Open or close one sequence for credit notes (the two halves of toggling `dedicated`).
--
-- Closing refuses while credit notes were numbered here: their reference index lives in this
-- sequence's slot, and a replay routed to the other sequence would not find it and would take
-- a second number. Opening always succeeds. Each half is atomic in its own slot; between the
-- halves no sequence serves credit notes and allocations answer 503 (retry), never a number.
--
-- KEYS[1] {seq:S}:settings   KEYS[2] {seq:S}:stats   KEYS[3] {seq:S}:audit
--
-- ARGV[1] routing field (dedicated in credit_note, credit_notes in invoice)
-- ARGV[2] '1' open | '0' close   ARGV[3] audit JSON to append if the value changes ('' = none)
--
-- Returns {"ok", changed (0|1)} | {"error", "in_use", count}

local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == ARGV[2] then
  return {'ok', 0}
end
if ARGV[2] == '0' then
  local count = tonumber(redis.call('HGET', KEYS[2], 'credit_notes') or '0')
  if count > 0 then
    return {'error', 'in_use', tostring(count)}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[3])
end
return {'ok', 1}
