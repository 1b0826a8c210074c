"""Build the Redis client from configuration: a URL, a master found through Sentinel, or a
Redis Cluster (``INVOICE_SYNC_REDIS_CLUSTER``, redis-py's ``RedisCluster``).

The client is a :class:`DurableRedis`: every MULTI/EXEC transaction on it (systems registry,
tokens) is acknowledged only once durable, exactly like an allocation — refused before it is
sent when the server cannot keep it, confirmed after EXEC on the same connection otherwise
(``coordinator.ops.durability``). A revoked or rotated token cannot come back after a crash or
a failover because the revocation was on disk, and on the replicas, before anyone heard of it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import redis
from flask import Flask, current_app
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from coordinator.exceptions import NotDurable
from coordinator.ops import confirmation

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

    guard: confirmation.Guard
    owner: redis.Redis

    node_address: str | None = None
    """On a Cluster: ``host:port`` of the master this pipeline runs on (see _SlotPipeline)."""

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Check the server can keep the transaction, run it, confirm it (or NotDurable)."""
        self._durability = None
        if (self.transaction or self.explicit_transaction) and self.command_stack:
            self._durability = self.guard.current(self.owner)
            if self.node_address is not None:
                self._durability = self._durability.on_node(self.node_address)
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

    durability_guard: confirmation.Guard | None = None
    queue_client: redis.Redis | None = None
    """A plain Redis for the job queue (INVOICE_SYNC_QUEUE_REDIS_URL); None: this one."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        """Return a pipeline; a :class:`DurablePipeline` when a guard is attached."""
        if self.durability_guard is None:
            return super().pipeline(transaction, shard_hint)
        pipe = DurablePipeline(self.connection_pool, self.response_callbacks, transaction,
                               shard_hint)
        pipe.guard = self.durability_guard
        pipe.owner = self
        return pipe


class _SlotPipeline:
    """A transaction on a Cluster, run on the master of its first key's slot.

    A Cluster runs a transaction only when all its keys share a slot, so the first key names
    the master; a :class:`DurablePipeline` on that master's own connections then confirms the
    transaction on the connection that ran EXEC, as on a single server. Binds on the first
    call that names a key (``watch``, or the first queued command).
    """

    def __init__(self, cluster: DurableCluster) -> None:
        self._cluster = cluster
        self._pipe: DurablePipeline | None = None

    def _bind(self, key: str) -> DurablePipeline:
        node = for_key(self._cluster, key)
        pipe = DurablePipeline(node.connection_pool, node.response_callbacks, True, None)
        pipe.guard = self._cluster.durability_guard
        pipe.owner = self._cluster
        pipe.node_address = node_address(self._cluster, key)
        self._pipe = pipe
        return pipe

    def __getattr__(self, name: str) -> Any:
        if self._pipe is not None:
            return getattr(self._pipe, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._pipe is None:
                if not args:  # execute/reset of an empty transaction
                    return [] if name == "execute" else None
                self._bind(args[0])
            return getattr(self._pipe, name)(*args, **kwargs)

        return call

    def __enter__(self) -> _SlotPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pipe is not None:
            self._pipe.reset()


class DurableCluster(RedisCluster):
    """``RedisCluster`` for the coordinator: carries the durability guard and the queue client.

    Numbering sends each script and its confirmation to the master of the script's slot on one
    connection (:func:`for_key`); transactions run on the master of their slot and wait for
    durability as on one server (:class:`_SlotPipeline`); other commands are routed by
    redis-py.
    """

    durability_guard: confirmation.Guard | None = None

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        """A transaction (``transaction=True``) on its slot's master; else redis-py's."""
        if transaction and self.durability_guard is not None:
            return _SlotPipeline(self)
        return super().pipeline(transaction, shard_hint)
    queue_client: redis.Redis | None = None
    """A plain Redis for the job queue (INVOICE_SYNC_QUEUE_REDIS_URL): RQ needs one."""


class OncePerClient:
    """Run ``action(client)`` once per client object in this process, before its first use.

    For the migrations of the previous release's data: one check per process, not per call.
    Clients are held weakly, so a new client never passes for an old one that was collected.
    """

    def __init__(self, action: Callable[[Any], Any]) -> None:
        self._action = action
        self._done: weakref.WeakSet = weakref.WeakSet()

    def __call__(self, client: redis.Redis) -> redis.Redis:
        if client not in self._done:
            self._action(client)
            self._done.add(client)
        return client

    def forget(self) -> None:
        """Run the action again for every client (tests: a new server behind the same one)."""
        self._done.clear()


def parse_nodes(value: str, setting: str = "INVOICE_SYNC_SENTINELS") -> list[tuple[str, int]]:
    """Parse ``"h1:26379,h2:26379"`` into ``[("h1", 26379), ("h2", 26379)]``."""
    nodes = []
    for item in str(value).split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{setting}: {item!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """Parse ``INVOICE_SYNC_SENTINELS`` (see :func:`parse_nodes`)."""
    return parse_nodes(value)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def for_key(client: redis.Redis, key: str) -> redis.Redis:
    """The client that serves ``key`` on one connection: on a Cluster the master of its slot
    (so a script and its WAIT/WAITAOF share a connection), elsewhere ``client`` itself."""
    if not is_cluster(client):
        return client
    node = client.get_node_from_key(key)
    if node is None or node.redis_connection is None:
        client.nodes_manager.initialize()
        node = client.get_node_from_key(key)
    return node.redis_connection


def node_address(client: Any, key: str) -> str:
    """``host:port`` of the Cluster master serving ``key`` (as :func:`for_key` uses it)."""
    node = client.get_node_from_key(key)
    return f"{node.host}:{node.port}"


def forget_topology(client: Any) -> None:
    """After a MOVED or a dead node on a Cluster, learn the slots again before the next try."""
    if is_cluster(client):
        try:
            client.nodes_manager.initialize()
        except redis.RedisError:
            pass  # the next request tries again


def make_redis(config: Mapping[str, Any], *, decode: bool = True) -> redis.Redis:
    """Return a client for the configured Redis (decoded strings, bounded timeouts).

    Its transactions wait for durability as ``config`` asks (DURABLE_REPLICAS, ...).
    ``decode=False`` answers bytes (``invoice-sync backup`` reads binary DUMP payloads).
    """
    client = _connect(config, decode)
    client.durability_guard = confirmation.Guard(config)
    if config.get("QUEUE_REDIS_URL"):
        client.queue_client = redis.Redis.from_url(
            config["QUEUE_REDIS_URL"], socket_timeout=float(config["REDIS_SOCKET_TIMEOUT"]))
    return client


def _connect(config: Mapping[str, Any], decode: bool = True) -> DurableRedis | DurableCluster:
    timeout = float(config["REDIS_SOCKET_TIMEOUT"])
    if config.get("REDIS_CLUSTER"):
        seeds = parse_nodes(config["REDIS_CLUSTER"], "INVOICE_SYNC_REDIS_CLUSTER")
        return DurableCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            password=config.get("REDIS_PASSWORD"), socket_timeout=timeout,
            socket_connect_timeout=timeout, decode_responses=decode,
            # While a master's replica is being promoted, the other masters keep serving.
            require_full_coverage=False,
        )
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
            decode_responses=decode,
            redis_class=DurableRedis,
        )
    if not config.get("REDIS_URL"):
        raise RuntimeError(
            "No Redis configured: set INVOICE_SYNC_REDIS_URL (or INVOICE_SYNC_SENTINELS, or "
            "INVOICE_SYNC_REDIS_CLUSTER), "
            "or run `invoice-sync serve`, which starts an embedded one"
        )
    return DurableRedis.from_url(
        config["REDIS_URL"], socket_timeout=timeout, socket_connect_timeout=timeout,
        decode_responses=decode, health_check_interval=30,
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
        app.extensions[confirmation.EXTENSION] = guard


def get_redis() -> redis.Redis:
    """Return the current app's Redis client."""
    return current_app.extensions[EXTENSION]
