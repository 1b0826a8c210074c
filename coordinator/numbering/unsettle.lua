-- Bring one settled entry back into the period's ledger hash (numbering/settled.py), so the
-- scripts that change an entry (transition.lua, reissue.lua) see it; the block keeps its copy,
-- which readers ignore while the entry is in the hash. Idempotent.
--
-- KEYS[1] {ser:R}:S:ledger:<P>   KEYS[2] {ser:R}:S:ledger-order:<P>
-- KEYS[3] {ser:R}:S:settled:<P>  hash: count (one fewer entry lives only in blocks)
--
-- ARGV[1] number   ARGV[2] the entry (JSON, as the block holds it)
--
-- Returns 1 when brought back now, 0 when it was in the hash already.

if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'count', -1)
return 1
