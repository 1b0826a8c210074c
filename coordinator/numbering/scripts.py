"""Load the numbering Lua scripts once and run them, optionally with a durability wait.

One allocation is one round trip: EVALSHA and its durability confirmation (``WAITAOF``, or on
servers older than 7.2 the fsync policy read back, see ``coordinator.ops.durability``) go out
in one non-transactional pipeline on one connection, so the confirmation covers exactly the
writes the script just made.
redis-py's ``register_script`` in a pipeline would first send ``SCRIPT EXISTS`` on every
execute (a second round trip), so NOSCRIPT is handled here instead: the script did not run,
it is loaded and the pipeline sent again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, TryAgainError

from coordinator.ops import redis_client
from coordinator.ops.confirmation import Durability


@dataclass(frozen=True)
class LuaScript:
    """A Lua file next to this module, known by its SHA1."""

    name: str
    source: str = field(repr=False)
    sha: str = ""

    @classmethod
    def load(cls, name: str) -> LuaScript:
        """Read ``<name>.lua`` from this package."""
        source = resources.files(__package__).joinpath(f"{name}.lua").read_text()
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


ALLOCATE = LuaScript.load("allocate")
TRANSITION = LuaScript.load("transition")
SETTINGS = LuaScript.load("settings")
ROUTE = LuaScript.load("route")


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
    for attempt in (1, 2):
        pipe = node.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        if durability is not None:
            durability.queue(pipe)
        try:
            replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            redis_client.forget_topology(client)  # a dead master: its replica takes over
            if durability is not None:
                durability.forget()
            raise
        if isinstance(replies[0], NoScriptError) and attempt == 1:
            node.script_load(script.source)
            continue
        if isinstance(replies[0], Exception):
            if isinstance(replies[0], (MovedError, AskError, ClusterDownError, TryAgainError)):
                redis_client.forget_topology(client)  # slots moved (failover, resharding)
                if durability is not None:
                    durability.forget()
            raise replies[0]
        return replies[0], (_Confirmation(durability, replies[1:]) if durability is not None
                            else None)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class _Confirmation:
    """The replies of the confirmation sent with a script, and how it was sent (on a Cluster
    the master of the slot decides whether WAITAOF or the fsync policy confirms)."""

    durability: Durability
    replies: Sequence[Any]


def check_durable(wait: _Confirmation, durability: Durability) -> None:
    """Raise ``NotDurable`` unless the confirmation queued with the write holds (see
    :meth:`coordinator.ops.confirmation.Durability.confirm`)."""
    wait.durability.confirm(wait.replies)
