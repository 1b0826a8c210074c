-- Store a batch of invoices of one system and keep its aggregates exact, atomically.
--
-- For every invoice whose record changed: subtract the old record's contribution, add the new
-- one, write the record. Storing the same record again changes nothing, so a re-run sync (after
-- a crash, or a full sync over stored data) never double counts.
--
-- KEYS[1]  {sys:<name>}:invoices      hash  id -> record
-- KEYS[2]  {sys:<name>}:aggregates    hash  "<YYYY-MM>|<status>|<cur>|<n|net|tax|gross>" -> int
-- KEYS[3]  {sys:<name>}:receivables   hash  "<due YYYY-MM-DD>|<cur>|<n|gross>" -> int (Unpaid)
-- KEYS[4]  {sys:<name>}:currencies    hash  currency -> invoices
-- KEYS[5]  {sys:<name>}:numbers       hash  invoicenum -> invoices carrying it
-- KEYS[6]  {sys:<name>}:numbers:changed  list: each invoicenum whose count in KEYS[5] this
--          call changed is appended (the reconciliation state consumes it, O(changes))
-- KEYS[7]  {sys:<name>}:sync:lock      (optional, with ARGV[2]) the system's sync lock
-- ARGV[1]  the batch: "<id>|<bytes>|<record>" repeated, <bytes> the record's length in bytes
--          (an empty record deletes the invoice). One argument instead of two per invoice:
--          building and sending thousands of arguments cost the caller more than this script.
-- ARGV[2]  (optional) the id of the sync writing: the fencing token. When the lock is not held
--          by it the script changes nothing and fails with "LOCK_LOST" — a sync that lost its
--          lock must not write over (or delete) what the sync now holding it stores.
--
-- Record: "date|duedate|datepaid|status|currency|subtotal|tax|tax2|credit|total|invoicenum"
-- (dates YYYYMMDD, datepaid YYYYMMDDhhmmss, "" when unset; money in integer minor units as
-- decimal strings; invoicenum last because it is free text and may contain "|").
-- One HMGET reads the batch's old records and one HSET writes the new ones; contributions are
-- summed per aggregate cell over the batch and applied at the end with one HMGET and one HSET
-- per hash (see apply: an HINCRBY per field and per invoice number cost more than the rest of
-- the script). Batch sums are Lua doubles, exact below 2^53: store.py refuses amounts that
-- could reach it within one batch; stored totals beyond 10^15 are moved by HINCRBY (int64).
--
-- Returns {inserted, updated, deleted, unchanged, distinct currencies}.

local invoices, aggregates, receivables, currencies, numbers, changed =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if KEYS[7] and redis.call('GET', KEYS[7]) ~= ARGV[2] then
  return redis.error_reply('LOCK_LOST')
end
local match, sub, tonumber, format = string.match, string.sub, tonumber, string.format

-- The fields a contribution needs, in one pattern match (datepaid and credit are skipped).
local RECORD = '^([^|]*)|([^|]*)|[^|]*|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|[^|]*|([^|]*)|(.*)$'

-- cell key -> {month, status, currency, n, net, tax, gross}; due key -> {due, currency, n, gross}
local cells, dues, by_currency, by_number = {}, {}, {}, {}

local function contribute(record, sign)
  local date, duedate, status, currency, net, tax, tax2, gross, number = match(record, RECORD)
  local month = sub(date, 1, 6)
  local key = month .. '|' .. status .. '|' .. currency
  local c = cells[key]
  if not c then
    c = {month, status, currency, 0, 0, 0, 0}
    cells[key] = c
  end
  gross = sign * tonumber(gross)
  c[4] = c[4] + sign
  c[5] = c[5] + sign * tonumber(net)
  c[6] = c[6] + sign * (tonumber(tax) + tonumber(tax2))
  c[7] = c[7] + gross
  if status == 'Unpaid' then
    local dkey = duedate .. '|' .. currency
    local d = dues[dkey]
    if not d then
      d = {duedate, currency, 0, 0}
      dues[dkey] = d
    end
    d[3] = d[3] + sign
    d[4] = d[4] + gross
  end
  by_currency[currency] = (by_currency[currency] or 0) + sign
  if number ~= '' then by_number[number] = (by_number[number] or 0) + sign end
end

local blob = ARGV[1]
local ids, records, count, pos = {}, {}, 0, 1
while pos <= #blob do
  local id, size, start = match(blob, '^(%d+)|(%d+)|()', pos)
  count = count + 1
  pos = start + tonumber(size)
  ids[count], records[count] = id, sub(blob, start, pos - 1)
end
if count == 0 then return {0, 0, 0, 0, redis.call('HLEN', currencies)} end
local olds = redis.call('HMGET', invoices, unpack(ids))

local inserted, updated, deleted, unchanged = 0, 0, 0, 0
local writes, removals = {}, {}
for i = 1, count do
  local id, record, old = ids[i], records[i], olds[i]
  if old == record or (not old and record == '') then
    unchanged = unchanged + 1
  else
    if old then contribute(old, -1) end
    if record == '' then
      removals[#removals + 1] = id
      deleted = deleted + 1
    else
      contribute(record, 1)
      writes[#writes + 1] = id
      writes[#writes + 1] = record
      if old then updated = updated + 1 else inserted = inserted + 1 end
    end
  end
end
if #writes > 0 then redis.call('HSET', invoices, unpack(writes)) end
if #removals > 0 then redis.call('HDEL', invoices, unpack(removals)) end

-- Add changes (field -> summed change) to the hash key with one HMGET and one HSET, and return
-- field -> new value. A value is added in Lua only while both numbers are below 10^15 (the sum
-- then stays exact in a double); beyond that HINCRBY adds it as an exact int64.
local function apply(key, changes)
  local fields, deltas = {}, {}
  for field, change in pairs(changes) do
    if change ~= 0 then
      fields[#fields + 1], deltas[#deltas + 1] = field, change
    end
  end
  local now = {}
  if #fields == 0 then return now end
  local olds, sets = redis.call('HMGET', key, unpack(fields)), {}
  for i = 1, #fields do
    local field, change, old = fields[i], deltas[i], olds[i] or '0'
    if #old < 16 and change < 1e15 and change > -1e15 then
      now[field] = tonumber(old) + change
      sets[#sets + 1] = field
      sets[#sets + 1] = format('%.0f', now[field])
    else
      now[field] = redis.call('HINCRBY', key, field, format('%.0f', change))
    end
  end
  if #sets > 0 then redis.call('HSET', key, unpack(sets)) end
  return now
end

local function drop(key, fields)
  if #fields > 0 then redis.call('HDEL', key, unpack(fields)) end
end

-- A cell whose count fell to zero is dropped whole (its sums are zero too); so are counters of
-- currencies and numbers. Only a field that changed can have reached zero.
local changes, gone = {}, {}
for _, c in pairs(cells) do
  local month = c[1] == '' and 'none' or (sub(c[1], 1, 4) .. '-' .. sub(c[1], 5, 6))
  local p = month .. '|' .. c[2] .. '|' .. c[3] .. '|'
  changes[p .. 'n'], changes[p .. 'net'], changes[p .. 'tax'], changes[p .. 'gross'] =
    c[4], c[5], c[6], c[7]
  c[8] = p
end
local now = apply(aggregates, changes)
for _, c in pairs(cells) do
  local p = c[8]
  if now[p .. 'n'] == 0 then
    gone[#gone + 1], gone[#gone + 2], gone[#gone + 3], gone[#gone + 4] =
      p .. 'n', p .. 'net', p .. 'tax', p .. 'gross'
  end
end
drop(aggregates, gone)

changes, gone = {}, {}
for _, d in pairs(dues) do
  local due = d[1] == '' and 'none'
    or (sub(d[1], 1, 4) .. '-' .. sub(d[1], 5, 6) .. '-' .. sub(d[1], 7, 8))
  local r = due .. '|' .. d[2] .. '|'
  changes[r .. 'n'], changes[r .. 'gross'] = d[3], d[4]
  d[5] = r
end
now = apply(receivables, changes)
for _, d in pairs(dues) do
  local r = d[5]
  if now[r .. 'n'] == 0 then gone[#gone + 1], gone[#gone + 2] = r .. 'n', r .. 'gross' end
end
drop(receivables, gone)

for _, key in ipairs({currencies, numbers}) do
  gone = {}
  local moved = {}
  for field, value in pairs(apply(key, key == currencies and by_currency or by_number)) do
    if value == 0 then gone[#gone + 1] = field end
    moved[#moved + 1] = field
  end
  drop(key, gone)
  if key == numbers and #moved > 0 then
    for i = 1, #moved, 1000 do
      redis.call('RPUSH', changed, unpack(moved, i, math.min(i + 999, #moved)))
    end
  end
end
return {inserted, updated, deleted, unchanged, redis.call('HLEN', currencies)}
