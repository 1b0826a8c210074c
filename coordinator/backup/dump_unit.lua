-- Read one unit of a backup (keys sharing one hash tag, so one slot) at one instant.
--
-- KEYS[1..n] the unit's keys, as listed by SCAN
-- ARGV       (none)
--
-- Returns {payload_1, pttl_1, ..., payload_n, pttl_n}; a payload is false for a key that is
-- gone (the caller lists the unit again).
local out = {}
for i = 1, #KEYS do
  out[#out + 1] = redis.call('DUMP', KEYS[i]) or false
  out[#out + 1] = redis.call('PTTL', KEYS[i])
end
return out
