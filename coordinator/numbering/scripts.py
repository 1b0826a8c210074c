"""The numbering Lua scripts, run optionally with a durability wait.

One allocation is one round trip: EVALSHA and its durability confirmation (``WAITAOF``, or on
servers older than 7.2 the fsync policy read back, see ``coordinator.ops.confirmation``) go out
in one non-transactional pipeline on one connection (``coordinator.lua.run``, which also
handles NOSCRIPT), so the confirmation covers exactly the writes the script just made. On a
Redis Cluster that connection is to the master of the script's slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from coordinator import lua
from coordinator.lua import LuaScript
from coordinator.ops import redis_client
from coordinator.ops.confirmation import Durability

ALLOCATE = LuaScript.load(__package__, "allocate")
TRANSITION = LuaScript.load(__package__, "transition")
SETTINGS = LuaScript.load(__package__, "settings")
ROUTE = LuaScript.load(__package__, "route")
MIGRATE_FENCE = LuaScript.load(__package__, "migrate_fence")
MIGRATE_COMMIT = LuaScript.load(__package__, "migrate_commit")
SEAL = LuaScript.load(__package__, "seal")
COMPACT = LuaScript.load(__package__, "compact")
SETTLE = LuaScript.load(__package__, "settle")
UNSETTLE = LuaScript.load(__package__, "unsettle")
REISSUE = LuaScript.load(__package__, "reissue")


def run(
    client: redis.Redis,
    script: LuaScript,
    keys: Sequence[str],
    args: Sequence[Any],
    durability: Durability | None = None,
) -> tuple[Any, Any]:
    """Run ``script``; with ``durability``, also its confirmation in the same round trip.

    Returns:
        The script's reply and the confirmation's replies (or None without ``durability``).
        Whether the wait succeeded is judged by :func:`check_durable`, because a script
        that refused (and wrote nothing) needs no durability.
    """
    # On a Cluster: the master of the script's slot, so the confirmation shares its connection.
    node = redis_client.for_key(client, keys[0])
    if durability is not None and redis_client.is_cluster(client):
        durability = durability.on_node(redis_client.node_address(client, keys[0]))
    try:
        replies = lua.run(node, script, keys, args,
                          durability.queue if durability is not None else None)
    except (redis.ConnectionError, redis.TimeoutError, MovedError, AskError, ClusterDownError,
            TryAgainError):
        # A dead master, or slots that moved (failover, resharding): learn them again.
        redis_client.forget_topology(client)
        if durability is not None:
            durability.forget()
        raise
    return replies[0], (_Confirmation(durability, replies[1:]) if durability is not None
                        else None)


@dataclass(frozen=True)
class _Confirmation:
    """The replies of the confirmation sent with a script, and how it was sent (on a Cluster
    the master of the slot decides whether WAITAOF or the fsync policy confirms)."""

    durability: Durability
    replies: Sequence[Any]


def check_durable(wait: _Confirmation | None) -> None:
    """Raise ``NotDurable`` unless the confirmation queued with the write holds (see
    :meth:`coordinator.ops.confirmation.Durability.confirm`); None (run without durability)
    has nothing to confirm."""
    if wait is not None:
        wait.durability.confirm(wait.replies)
