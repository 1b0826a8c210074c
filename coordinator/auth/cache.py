"""Token records cached in each process, kept true by Redis itself (client-side caching).

Every request must learn whether its token is still valid. Reading :data:`keys.TOKENS` each
time costs a round trip; a cache with a lifetime would let a revoked token work until it
expires. This cache is instead kept by Redis's server-assisted client-side caching
(``CLIENT TRACKING``, RESP3, default mode): the process reads token records on one connection
of its own with tracking on, and Redis pushes an invalidation on that same connection whenever
the hash changes (a token created, revoked or rotated, a system deleted, ``FLUSHDB``). Redis
queues that push while it runs the command that changed the hash and writes it out with that
command's own reply, at the latest; the coordinator answers a revocation only after its
durability wait, a later round trip on the revoking connection (``DurableRedis``), so the push
has been sent to every process before anyone hears of the revocation. Every lookup first reads
what is pending on its connection, so the next lookup of every process refuses the token. (The
one window left is the network's: a push delayed between Redis and a coordinator host, e.g. by
a retransmission, for longer than the revocation's answer takes to reach a client and that
client's request to reach the coordinator. On one host, loopback, there is none.)

The whole hash is one tracked key: any change to any token empties the cache (tokens change
rarely). Only records are cached, never an unknown token (random tokens would fill memory).
When the connection breaks, pushes may have been lost: the cache empties, and the next lookup
connects again with tracking on before it caches anything.

Why not redis-py's own cache (``Redis(cache_config=...)``): as of redis-py 8.1 it refuses every
server but Redis >= 7.4, so neither the bundled Valkey nor Debian's Redis 7.0 could use it.

Usage::

    cache = TokenCache()
    record = cache.get(client, token_digest)    # JSON record, or None for no such token
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

from coordinator import keys
from coordinator.ops import redis_client

EXTENSION = "invoice_sync.token_cache"
"""``app.extensions`` key of the app's :class:`TokenCache`."""

CLIENT_NAME = "invoice-sync:token-cache"
"""The cache's connection, as ``CLIENT LIST`` shows it (one per coordinator process)."""


class TokenCache:
    """Token records of :data:`keys.TOKENS`, tracked by Redis; one per app (and process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: Any = None
        self._records: dict[str, str] = {}

    def get(self, client: redis.Redis, token_digest: str) -> str | None:
        """Return the stored record of ``token_digest`` (None: no such token).

        Raises:
            redis.RedisError: Redis cannot be reached (nothing is served from the cache then).
        """
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's socket is not ours
                self._pid, self._conn = os.getpid(), None
                self._records.clear()
            try:
                conn = self._connection(client)
                # Invalidations the server queued before answering any change we were told of.
                while conn.can_read(timeout=0):
                    conn.read_response(push_request=True)
                if token_digest in self._records:
                    return self._records[token_digest]
                conn.send_command("HGET", keys.TOKENS, token_digest)
                record = conn.read_response()  # pushes before it are handled on the way
            except redis.RedisError:
                self._drop()
                raise
            if record is not None:
                self._records[token_digest] = record
            return record

    def clear(self) -> None:
        """Forget every record and the connection (the next lookup connects again)."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._records.clear()
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None

    def _connection(self, client: redis.Redis) -> Any:
        if self._conn is None:
            # The server that holds the tokens: on a Cluster the master of their slot; with
            # Sentinel a connection that finds the master when it connects.
            pool = redis_client.for_key(client, keys.TOKENS).connection_pool
            conn = pool.connection_class(**{**pool.connection_kwargs, "protocol": 3,
                                             "client_name": CLIENT_NAME})
            conn.register_connect_callback(self._on_connect)
            self._conn = conn
        return self._conn

    def _on_connect(self, conn: Any) -> None:
        # A new connection: nothing cached before it is known to be current, and tracking is
        # per connection, so turn it on before the first read.
        self._records.clear()
        conn.send_command("CLIENT", "TRACKING", "ON")
        if conn.read_response() not in ("OK", b"OK"):
            raise redis.ConnectionError("CLIENT TRACKING ON was refused")
        # redis-py hands RESP3 invalidation pushes to this handler (as its own cache does).
        conn._parser.set_invalidation_push_handler(self._invalidated)

    def _invalidated(self, push: list[Any]) -> None:
        # ["invalidate", [keys]] or ["invalidate", None] after FLUSHALL/FLUSHDB. One key is
        # tracked here, so either way: empty the cache.
        self._records.clear()
