-- Archive one block of sealed ledger events (numbering/compaction.py): all or nothing, only when
-- what the caller read and packed is still what the lists hold at those indexes, and only
-- right after what is archived already. The archived places keep an empty string each, so
-- every index (an event's 'seq', the chain's length) stays what it was for every script.
--
-- KEYS[1] {ser:R}:S:events     list: the hash-chained ledger events
-- KEYS[2] {ser:R}:S:chain      list: their SHA-256 hashes (hex), same index
-- KEYS[3] {ser:R}:S:archived   hash: events (how many, from index 0, are archived), head
--                              (the hash of the last archived event)
-- KEYS[4] {ser:R}:S:block:<start>   string: the block written here
--
-- ARGV[1] start (must equal the archived count)   ARGV[2] count of events in the block
-- ARGV[3] SHA1 (hex) of the events, then the hashes, of indexes start .. start+count-1, each
--         followed by a newline (what the caller packed)
-- ARGV[4] the block (bytes)   ARGV[5] the hash of its last event
--
-- Returns {"ok", archived count after} | {"stale", archived count} (someone archived
--   meanwhile) | {"short"} (those events are not all sealed, or would leave the chain's head
--   in the block) | {"changed"} (the lists hold something else there now): nothing written
--   unless "ok".

local start, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local archived = tonumber(redis.call('HGET', KEYS[3], 'events') or '0')
if archived ~= start then
  return {'stale', archived}
end
-- the chain's last hash stays in the list: allocate.lua and the sealer continue from it
if redis.call('LLEN', KEYS[2]) <= start + count then
  return {'short'}
end
local events = redis.call('LRANGE', KEYS[1], start, start + count - 1)
local hashes = redis.call('LRANGE', KEYS[2], start, start + count - 1)
if #events ~= count or #hashes ~= count then
  return {'short'}
end
if redis.sha1hex(table.concat(events, '\n') .. '\n' .. table.concat(hashes, '\n') .. '\n')
    ~= ARGV[3] then
  return {'changed'}
end
redis.call('SET', KEYS[4], ARGV[4])
for i = start, start + count - 1 do
  redis.call('LSET', KEYS[1], i, '')
  redis.call('LSET', KEYS[2], i, '')
end
redis.call('HSET', KEYS[3], 'events', start + count, 'head', ARGV[5])
return {'ok', start + count}
