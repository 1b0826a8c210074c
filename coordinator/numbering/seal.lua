-- Seal ledger events: append their SHA-256 hashes to the chain, only if nobody sealed meanwhile.
-- Idempotent: two coordinators sealing the same events compute the same hashes; the second
-- finds the chain longer than it expected and writes nothing.
--
-- KEYS[1] {ser:R}:S:chain   list: SHA-256 hex of each sealed event, same index as the events
--
-- ARGV[1] the chain length the caller read (the index of the first hash given)
-- ARGV[2..] the hashes of events ARGV[1], ARGV[1] + 1, ...
--
-- Returns the chain length after the call (unchanged when ARGV[1] was stale).

local length = redis.call('LLEN', KEYS[1])
if length ~= tonumber(ARGV[1]) then
  return length
end
return redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
