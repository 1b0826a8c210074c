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
-- ARGV     id1, record1, id2, record2, ...   (an empty record deletes the invoice)
--
-- Record: "date|duedate|datepaid|status|currency|subtotal|tax|tax2|credit|total|invoicenum"
-- (dates YYYYMMDD, datepaid YYYYMMDDhhmmss, "" when unset; money in integer minor units as
-- decimal strings; invoicenum last because it is free text and may contain "|").
-- One HMGET reads the batch's old records and one HSET writes the new ones; contributions are
-- summed per field over the batch and applied with one HINCRBY per field at the end (a batch
-- touches a few months: a few dozen calls, not six per invoice). Sums are Lua doubles, exact below 2^53: store.py refuses amounts that could reach
-- it within one batch, and the sums go to HINCRBY formatted as integers ("%.0f").
--
-- Returns {inserted, updated, deleted, unchanged, distinct currencies}.

local invoices, aggregates, receivables, currencies, numbers =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local find, sub, tonumber = string.find, string.sub, tonumber

local function split(record)
  local fields, pos = {}, 1
  for i = 1, 10 do
    local s = find(record, '|', pos, true)
    fields[i] = sub(record, pos, s - 1)
    pos = s + 1
  end
  fields[11] = sub(record, pos)
  return fields
end

-- key -> {field -> summed change}; groups: prefixes whose count may have reached zero.
local deltas = {[aggregates] = {}, [receivables] = {}, [currencies] = {}, [numbers] = {}}
local agg_groups, recv_groups = {}, {}

local function add(key, field, value)
  local d = deltas[key]
  d[field] = (d[field] or 0) + value
end

local function contribute(record, sign)
  local f = split(record)
  local date, duedate, status, currency = f[1], f[2], f[4], f[5]
  local month = 'none'
  if date ~= '' then month = sub(date, 1, 4) .. '-' .. sub(date, 5, 6) end
  local p = month .. '|' .. status .. '|' .. currency .. '|'
  local gross = sign * tonumber(f[10])
  agg_groups[p] = true
  add(aggregates, p .. 'n', sign)
  add(aggregates, p .. 'net', sign * tonumber(f[6]))
  add(aggregates, p .. 'tax', sign * (tonumber(f[7]) + tonumber(f[8])))
  add(aggregates, p .. 'gross', gross)
  if status == 'Unpaid' then
    local due = 'none'
    if duedate ~= '' then
      due = sub(duedate, 1, 4) .. '-' .. sub(duedate, 5, 6) .. '-' .. sub(duedate, 7, 8)
    end
    local r = due .. '|' .. currency .. '|'
    recv_groups[r] = true
    add(receivables, r .. 'n', sign)
    add(receivables, r .. 'gross', gross)
  end
  add(currencies, currency, sign)
  if f[11] ~= '' then add(numbers, f[11], sign) end
end

local ids = {}
for i = 1, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local olds = redis.call('HMGET', invoices, unpack(ids))

local inserted, updated, deleted, unchanged = 0, 0, 0, 0
local writes, removals = {}, {}
for i = 1, #ids do
  local id, record, old = ids[i], ARGV[2 * i], olds[i]
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

for key, fields in pairs(deltas) do
  for field, change in pairs(fields) do
    if change ~= 0 then
      local now = redis.call('HINCRBY', key, field, string.format('%.0f', change))
      -- Counters of currencies and numbers vanish at zero, like the groups below.
      if now == 0 and (key == currencies or key == numbers) then
        redis.call('HDEL', key, field)
      end
    end
  end
end
-- A group whose count fell to zero is dropped whole (its sums are zero too).
for p, _ in pairs(agg_groups) do
  if tonumber(redis.call('HGET', aggregates, p .. 'n') or '0') == 0 then
    redis.call('HDEL', aggregates, p .. 'n', p .. 'net', p .. 'tax', p .. 'gross')
  end
end
for r, _ in pairs(recv_groups) do
  if tonumber(redis.call('HGET', receivables, r .. 'n') or '0') == 0 then
    redis.call('HDEL', receivables, r .. 'n', r .. 'gross')
  end
end
return {inserted, updated, deleted, unchanged, redis.call('HLEN', currencies)}
