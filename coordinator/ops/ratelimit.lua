-- Count one request of one token in one fixed window, without touching the AOF or the replicas.
--
-- KEYS[1] ratelimit:<token digest prefix>:<window>   string: requests counted so far
-- ARGV[1] seconds the counter lives (two windows)
--
-- Returns the count including this request.
--
-- Why REPL_NONE: with `appendfsync always` every write that reaches the AOF makes its round
-- trip wait for an fsync, and this counter sits on the token lookup of every authenticated
-- request. A rate counter needs no durability: after a restart or failover the tokens simply
-- start the current window afresh. (The key's expiry still propagates a DEL; harmless.)

redis.set_repl(redis.REPL_NONE)
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
