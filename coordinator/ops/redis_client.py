"""Build the Redis client from configuration: a URL, or a master found through Sentinel.

The client is a :class:`DurableRedis`: every MULTI/EXEC transaction on it (systems registry,
tokens) is acknowledged only once durable, exactly like an allocation — refused before it is
sent when the server cannot keep it, confirmed after EXEC on the same connection otherwise
(``coordinator.ops.durability``). A revoked or rotated token cannot come back after a crash or
a failover because the revocation was on disk, and on the replicas, before anyone heard of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, current_app
from redis.client import Pipeline
from redis.sentinel import Sentinel

from coordinator.exceptions import NotDurable
from coordinator.ops import durability

EXTENSION = "invoice_sync.redis"


class _Queue:
    """Collects the commands ``Durability.queue`` adds, to send them on one connection."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)


class DurablePipeline(Pipeline):
    """A redis-py pipeline whose transactions wait for durability (see the module docstring).

    Non-transactional pipelines are untouched: they are reads, or writes that carry their own
    confirmation (the numbering scripts).
    """

    guard: durability.Guard
    owner: redis.Redis

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Check the server can keep the transaction, run it, confirm it (or NotDurable)."""
        self._durability = None
        if (self.transaction or self.explicit_transaction) and self.command_stack:
            self._durability = self.guard.current(self.owner)
        return super().execute(raise_on_error)

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool):
        result = super()._execute_transaction(connection, commands, raise_on_error)
        wanted = self._durability
        if wanted is None:
            return result
        queue = _Queue()
        wanted.queue(queue)
        replies: list[Any] = []
        try:
            connection.send_packed_command(connection.pack_commands(queue.commands))
            for args in queue.commands:
                try:
                    replies.append(self.parse_response(connection, args[0]))
                except redis.ResponseError as error:
                    replies.append(error)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            # Not a retry of the whole transaction (redis-py would send it again): it ran.
            connection.disconnect()
            raise NotDurable(f"Durability could not be confirmed ({type(error).__name__}); "
                             "retry the request") from error
        wanted.confirm(replies)
        return result


class DurableRedis(redis.Redis):
    """``redis.Redis`` whose transactions are acknowledged only when durable.

    ``durability_guard`` None (the default) makes it a plain client.
    """

    durability_guard: durability.Guard | None = None

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        """Return a pipeline; a :class:`DurablePipeline` when a guard is attached."""
        if self.durability_guard is None:
            return super().pipeline(transaction, shard_hint)
        pipe = DurablePipeline(self.connection_pool, self.response_callbacks, transaction,
                               shard_hint)
        pipe.guard = self.durability_guard
        pipe.owner = self
        return pipe


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """Parse ``"h1:26379,h2:26379"`` into ``[("h1", 26379), ("h2", 26379)]``."""
    nodes = []
    for item in str(value).split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"INVOICE_SYNC_SENTINELS: {item!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes


def make_redis(config: Mapping[str, Any]) -> redis.Redis:
    """Return a client for the configured Redis (decoded strings, bounded timeouts).

    Its transactions wait for durability as ``config`` asks (DURABLE_REPLICAS, ...).
    """
    client = _connect(config)
    client.durability_guard = durability.Guard(config)
    return client


def _connect(config: Mapping[str, Any]) -> DurableRedis:
    timeout = float(config["REDIS_SOCKET_TIMEOUT"])
    if config.get("SENTINELS"):
        sentinel = Sentinel(
            parse_sentinels(config["SENTINELS"]),
            socket_timeout=timeout,
            sentinel_kwargs={"password": config.get("SENTINEL_PASSWORD"), "socket_timeout": 1.0},
        )
        return sentinel.master_for(
            config["SENTINEL_MASTER"],
            password=config.get("REDIS_PASSWORD"),
            socket_timeout=timeout,
            decode_responses=True,
            redis_class=DurableRedis,
        )
    if not config.get("REDIS_URL"):
        raise RuntimeError(
            "No Redis configured: set INVOICE_SYNC_REDIS_URL (or INVOICE_SYNC_SENTINELS), "
            "or run `invoice-sync serve`, which starts an embedded one"
        )
    return DurableRedis.from_url(
        config["REDIS_URL"], socket_timeout=timeout, socket_connect_timeout=timeout,
        decode_responses=True, health_check_interval=30,
    )


def init_app(app: Flask) -> None:
    """Attach the client (tests may inject one as config ``REDIS_CLIENT``). Connects lazily.

    The client's durability guard becomes the app's, so writes, transactions and ``/readyz``
    share one view of the server.
    """
    client = app.config.get("REDIS_CLIENT") or make_redis(app.config)
    app.extensions[EXTENSION] = client
    guard = getattr(client, "durability_guard", None)
    if guard is not None:
        app.extensions[durability.EXTENSION] = guard


def get_redis() -> redis.Redis:
    """Return the current app's Redis client."""
    return current_app.extensions[EXTENSION]
