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
-- Money is never turned into a Lua number (a double): it goes to HINCRBY as the string it came
-- as, negated by string, so amounts stay exact at any size HINCRBY allows.
--
-- Returns {inserted, updated, deleted, unchanged, distinct currencies}.

local invoices, aggregates, receivables, currencies, numbers =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function split(record)
  local fields, pos = {}, 1
  for i = 1, 10 do
    local s = string.find(record, '|', pos, true)
    fields[i] = string.sub(record, pos, s - 1)
    pos = s + 1
  end
  fields[11] = string.sub(record, pos)
  return fields
end

local function negate(value)
  if string.sub(value, 1, 1) == '-' then return string.sub(value, 2) end
  if value == '0' then return value end
  return '-' .. value
end

-- Add sign * value to hash[field]; drop the whole group when its count reaches zero.
local function bump_group(key, prefix, sign, metrics)
  local count = redis.call('HINCRBY', key, prefix .. 'n', sign)
  if count == 0 then
    local fields = {prefix .. 'n'}
    for name, _ in pairs(metrics) do fields[#fields + 1] = prefix .. name end
    redis.call('HDEL', key, unpack(fields))
    return
  end
  for name, values in pairs(metrics) do
    for _, value in ipairs(values) do
      if value ~= '0' then
        if sign < 0 then value = negate(value) end
        redis.call('HINCRBY', key, prefix .. name, value)
      end
    end
  end
end

local function bump_count(key, field, sign)
  if redis.call('HINCRBY', key, field, sign) == 0 then redis.call('HDEL', key, field) end
end

local function contribute(record, sign)
  local f = split(record)
  local date, duedate, status, currency = f[1], f[2], f[4], f[5]
  local month = 'none'
  if date ~= '' then month = string.sub(date, 1, 4) .. '-' .. string.sub(date, 5, 6) end
  bump_group(aggregates, month .. '|' .. status .. '|' .. currency .. '|', sign,
    {net = {f[6]}, tax = {f[7], f[8]}, gross = {f[10]}})
  if status == 'Unpaid' then
    local due = 'none'
    if duedate ~= '' then
      due = string.sub(duedate, 1, 4) .. '-' .. string.sub(duedate, 5, 6) .. '-' ..
            string.sub(duedate, 7, 8)
    end
    bump_group(receivables, due .. '|' .. currency .. '|', sign, {gross = {f[10]}})
  end
  bump_count(currencies, currency, sign)
  if f[11] ~= '' then bump_count(numbers, f[11], sign) end
end

local inserted, updated, deleted, unchanged = 0, 0, 0, 0
for i = 1, #ARGV, 2 do
  local id, record = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', invoices, id)
  if old == record or (not old and record == '') then
    unchanged = unchanged + 1
  else
    if old then contribute(old, -1) end
    if record == '' then
      redis.call('HDEL', invoices, id)
      deleted = deleted + 1
    else
      contribute(record, 1)
      redis.call('HSET', invoices, id, record)
      if old then updated = updated + 1 else inserted = inserted + 1 end
    end
  end
end
return {inserted, updated, deleted, unchanged, redis.call('HLEN', currencies)}
