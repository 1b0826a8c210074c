-- Take the next number of one sequence for each of N WHMCS documents (N >= 1), or return the
-- one a document already has. All or nothing: every item is checked first, and only when all
-- of them can be numbered do the counters, ledger entries, reference indexes and the
-- formatted-number index change, and each new number appends its 'issued' event to the
-- sequence's hash-chained event list (sealed by chain.py); every key is in the series' slot
-- {ser:R}. A single allocation is the batch of one; a replay appends no event.
--
-- Item i (0-based) owns KEYS[12*i+1 .. 12*i+12] and ARGV[11*i+1 .. 11*i+11]; for item i:
-- KEYS[1] {ser:R}:S:settings     hash: increment, format, padding, reset, routing flag
-- KEYS[2] {ser:R}:S:stats        hash: issued, credit_notes, replays
-- KEYS[3] {ser:R}:S:refs:<doc>:<system>   hash: reference -> ledger id
-- KEYS[4] {ser:R}:S:periods      set of periods
-- KEYS[5] {ser:R}:S:counter:<P>  KEYS[6] {ser:R}:S:ledger:<P>  KEYS[7] {ser:R}:S:ledger-order:<P>
--         where P is the period of the document date under the reset the caller expects
-- KEYS[8] {ser:R}:members        hash: system -> open | closed
-- KEYS[9] {ser:R}:formatted      hash: formatted number -> ledger id (the whole series)
-- KEYS[10] {ser:R}:S:events      list: the hash-chained ledger events (sealed by chain.py)
-- KEYS[11] {ser:R}:S:chain       list: their hashes (only read: where the caller seals from)
-- KEYS[12] {ser:R}:S:guard       hash: initialised, seen:<P> (numbering/guard.py)
--
-- ARGV[1] document (invoice | credit_note)   ARGV[2] system     ARGV[3] reference
-- ARGV[4] document date YYYY-MM-DD            ARGV[5] period P   ARGV[6] reset P was chosen by
-- ARGV[7] now (ISO 8601 UTC)                  ARGV[8] largest number allowed (< 2^53)
-- ARGV[9] sequence name S                     ARGV[10] id prefix ('' in default, else 'R/')
-- ARGV[11] '1' when a system without a members field is served here (the default series)
--
-- Returns {"ok", item_1, ..., item_N, chains}: item_i is {kind, entry_json} with kind "new" |
--   "replay", in order; chains holds, for each sequence that appended an event,
--   {S, chain length, chain head or "", {every event from the chain length on}} (what
--   chain.seal_appended hashes, so sealing after the response needs no read; the events list
--   is empty when more than OTHERS_MAX events of other allocations wait too: a seal that fell
--   behind, which the caller's seal then reads and catches up),
--   or {"error", index (1-based), code, detail...} and nothing written. Codes:
--          uninitialized (no settings yet), member (the system is not served by this series:
--          detail = its members field or ''), moved (credit notes are not numbered in S),
--          reset (the sequence resets otherwise: detail = its reset; choose P again),
--          period (reference already numbered in another period: detail = its id),
--          exhausted (next number past the cap or the padding: detail = last number),
--          duplicate (the formatted number is already used in the series: detail = it, its id),
--          not_initialised (the series' numbering was never set explicitly, or was restored),
--          behind (a WHMCS shows a number of P above the counter: detail = guard's seen:<P>)
--
-- Numbers stay below 2^53 so Lua's doubles hold them exactly; they travel as strings in JSON.

local NKEYS, NARGS = 12, 11
local OTHERS_MAX = 64
local count = #KEYS / NKEYS
local settings_of, counters, formatted_taken, refs_taken = {}, {}, {}, {}
local plans = {}

-- Phase 1: decide every item, reading only. Counters, formatted numbers and references taken
-- by earlier items of this batch are remembered here, so item k sees the state items 1..k-1
-- leave, exactly as k separate allocations would.
for i = 1, count do
  local k, a = (i - 1) * NKEYS, (i - 1) * NARGS

  local s = settings_of[KEYS[k + 1]]
  if not s then
    local raw = redis.call('HGETALL', KEYS[k + 1])
    if #raw == 0 then
      return {'error', i, 'uninitialized'}
    end
    s = {}
    for j = 1, #raw, 2 do
      s[raw[j]] = raw[j + 1]
    end
    settings_of[KEYS[k + 1]] = s
  end
  local member = redis.call('HGET', KEYS[k + 8], ARGV[a + 2])
  if not (member == 'open' or (not member and ARGV[a + 11] == '1')) then
    return {'error', i, 'member', member or ''}
  end

  local seq, document = ARGV[a + 9], ARGV[a + 1]
  if document == 'credit_note' then
    local served = (seq == 'invoice' and s['credit_notes'] == '1')
      or (seq == 'credit_note' and s['dedicated'] == '1')
    if not served then
      return {'error', i, 'moved'}
    end
  end
  if s['reset'] ~= ARGV[a + 6] then
    return {'error', i, 'reset', s['reset']}
  end

  local period = ARGV[a + 5]
  local ref_slot = KEYS[k + 3] .. '\0' .. ARGV[a + 3]
  local existing = refs_taken[ref_slot] or redis.call('HGET', KEYS[k + 3], ARGV[a + 3])
  if existing then
    local existing_period, existing_number = string.match(existing, '^[^:]+:([^:]+):(%d+)$')
    if existing_period ~= period then
      return {'error', i, 'period', existing}
    end
    plans[i] = {replay = true, k = k, number_text = existing_number}
  else
    local increment = tonumber(s['increment'])
    local padding = tonumber(s['padding'])
    local current = counters[KEYS[k + 5]] or tonumber(redis.call('GET', KEYS[k + 5]) or '0')
    -- backup guard (numbering/guard.py): never number from a store that may be behind reality
    -- (lost data, an old backup). Replays above still answer; only new numbers wait.
    local guard = redis.call('HMGET', KEYS[k + 12], 'initialised', 'seen:' .. period)
    if not guard[1] then
      return {'error', i, 'not_initialised'}
    end
    if guard[2] and tonumber(string.match(guard[2], '^(%d+)')) > current then
      return {'error', i, 'behind', guard[2]}
    end
    -- end backup guard
    local number = current + increment
    local digits = string.format('%.0f', number)
    if number > tonumber(ARGV[a + 8]) or (padding > 0 and #digits > padding) then
      return {'error', i, 'exhausted', string.format('%.0f', current)}
    end
    local number_text = digits
    if padding > #digits then
      digits = string.rep('0', padding - #digits) .. digits
    end

    local date = ARGV[a + 4]
    local parts = {
      ['{YEAR}'] = string.sub(date, 1, 4), ['{MONTH}'] = string.sub(date, 6, 7),
      ['{DAY}'] = string.sub(date, 9, 10), ['{NUMBER}'] = digits,
    }
    local formatted = string.gsub(s['format'], '{%u+}', function(tag) return parts[tag] end)
    local fslot = KEYS[k + 9] .. '\0' .. formatted
    local owner = formatted_taken[fslot] or redis.call('HGET', KEYS[k + 9], formatted)
    if owner then
      return {'error', i, 'duplicate', formatted, owner}
    end

    local id = ARGV[a + 10] .. seq .. ':' .. period .. ':' .. number_text
    counters[KEYS[k + 5]] = number
    formatted_taken[fslot] = id
    refs_taken[ref_slot] = id
    plans[i] = {replay = false, k = k, number = number, number_text = number_text,
                increment = increment, formatted = formatted, id = id, period = period,
                date = date, entry = cjson.encode({
      id = id, number = number_text, previous = string.format('%.0f', current),
      formatted = formatted, sequence = seq, period = period, system = ARGV[a + 2],
      document = document, reference = ARGV[a + 3], date = date, status = 'issued',
      issued_at = ARGV[a + 7],
    })}
  end
end

-- Phase 2: every item can be numbered; write them in order.
local out, touched, chains = {'ok'}, {}, {}
for i = 1, count do
  local p = plans[i]
  local k, a = p.k, (i - 1) * NARGS
  if p.replay then
    -- A write of our own, so the WAITAOF sent after this script waits until the original
    -- allocation (an earlier offset) is on disk and on the replicas too.
    redis.call('HINCRBY', KEYS[k + 2], 'replays', 1)
    out[i + 1] = {'replay', redis.call('HGET', KEYS[k + 6], p.number_text)}
  else
    redis.call('HSET', KEYS[k + 9], p.formatted, p.id)
    redis.call('INCRBY', KEYS[k + 5], p.increment)
    redis.call('HSET', KEYS[k + 6], p.number_text, p.entry)
    redis.call('ZADD', KEYS[k + 7], p.number, p.number_text)
    redis.call('HSET', KEYS[k + 3], ARGV[a + 3], p.id)
    redis.call('SADD', KEYS[k + 4], ARGV[a + 5])
    redis.call('HINCRBY', KEYS[k + 2], 'issued', 1)
    if ARGV[a + 1] == 'credit_note' then
      redis.call('HINCRBY', KEYS[k + 2], 'credit_notes', 1)
    end
    -- ledger chain: the 'issued' event, appended in this same atomic step (sealed by chain.py);
    -- items of one sequence append in item order, as separate allocations would
    redis.call('RPUSH', KEYS[k + 10], cjson.encode({
      seq = redis.call('LLEN', KEYS[k + 10]), type = 'issued', at = ARGV[a + 7], id = p.id,
      number = p.number_text, formatted = p.formatted, system = ARGV[a + 2],
      document = ARGV[a + 1], reference = ARGV[a + 3], date = p.date, period = p.period,
    }))
    -- end ledger chain
    local c = touched[KEYS[k + 11]]
    if not c then
      c = {ARGV[a + 9], KEYS[k + 10], KEYS[k + 11], 0}
      touched[KEYS[k + 11]] = c
      chains[#chains + 1] = c
    end
    c[4] = c[4] + 1
    out[i + 1] = {'new', p.entry}
  end
end

-- What the caller seals: the unsealed events of each sequence appended to (ours, and the few
-- of concurrent allocations not sealed yet), with the chain's length and head they continue.
local state = {}
for _, c in ipairs(chains) do
  local sealed = redis.call('LLEN', c[3])
  local unsealed = {}
  if redis.call('LLEN', c[2]) - sealed - c[4] <= OTHERS_MAX then
    unsealed = redis.call('LRANGE', c[2], sealed, -1)
  end
  state[#state + 1] = {c[1], sealed, sealed > 0 and redis.call('LINDEX', c[3], -1) or '', unsealed}
end
out[count + 2] = state
return out
