-- Look a token up and count the request: against the token's budget when the token is known,
-- against the client address's failure budget when it is not. Nothing reaches the AOF or the
-- replicas.
--
-- KEYS[1] {auth}:tokens                 hash: token digest -> JSON record
-- KEYS[2] {auth}:rate:<digest>:<window>  string: requests of this token in the window
-- KEYS[3] {auth}:rate:failed:<window>    hash: client address -> failed authentications
-- KEYS[4] {auth}:rate:last-used          hash: token digest -> start of the last window used
-- ARGV[1] token digest
-- ARGV[2] seconds a counter lives (two windows)
-- ARGV[3] client address ('' = do not count failures)
-- ARGV[4] most addresses counted one by one in a window; later ones share the field '*'
-- ARGV[5] '1' when the token is known without a lookup (the configured admin token)
-- ARGV[6] unix start of the current window
--
-- Returns {record or false, count}: the token's count (this request included), or for an
-- unknown token the address's failures (0 when not counted).
--
-- Why only known tokens get a key of their own: every random token would otherwise leave one
-- behind (500 tokens, 500 keys), and under `noeviction` memory pressure turns into refused
-- allocations. Failures live in one hash per window with at most ARGV[4] + 1 fields.
--
-- Why REPL_NONE: with `appendfsync always` every write that reaches the AOF makes its round
-- trip wait for an fsync, and this sits on the token lookup of every authenticated request.
-- Counters need no durability: after a restart or failover they start the window afresh.

redis.set_repl(redis.REPL_NONE)
local record = false
if ARGV[5] ~= '1' then
  record = redis.call('HGET', KEYS[1], ARGV[1])
  if not record then
    if ARGV[3] == '' then
      return {false, 0}
    end
    local field = ARGV[3]
    local size = redis.call('HLEN', KEYS[3])
    if size >= tonumber(ARGV[4]) and redis.call('HEXISTS', KEYS[3], field) == 0 then
      field = '*'
    end
    local failures = redis.call('HINCRBY', KEYS[3], field, 1)
    if size == 0 then
      redis.call('EXPIRE', KEYS[3], ARGV[2])
    end
    return {false, failures}
  end
end
local count = redis.call('INCR', KEYS[2])
if count == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
end
return {record, count}
