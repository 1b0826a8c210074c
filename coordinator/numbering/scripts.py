"""The numbering Lua scripts, run optionally with a durability wait.

One allocation is one round trip: EVALSHA and ``WAITAOF`` go out in one non-transactional
pipeline on one connection (``coordinator.lua.run``, which also handles NOSCRIPT), so the wait
covers exactly the writes the script just made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from coordinator import lua
from coordinator.exceptions import NotDurable
from coordinator.lua import LuaScript

ALLOCATE = LuaScript.load(__package__, "allocate")
TRANSITION = LuaScript.load(__package__, "transition")
SETTINGS = LuaScript.load(__package__, "settings")
ROUTE = LuaScript.load(__package__, "route")


@dataclass(frozen=True)
class Durability:
    """How long to wait for fsync and how many replicas must have a write.

    Usage::

        Durability.from_config(app.config)  # DURABLE_REPLICAS, DURABILITY_TIMEOUT_MS
    """

    replicas: int = 0
    timeout_ms: int = 1000

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Durability:
        """Read ``DURABLE_REPLICAS`` and ``DURABILITY_TIMEOUT_MS``.

        The waits are kept under 80% of ``REDIS_SOCKET_TIMEOUT`` together (with replicas there
        are two, see :func:`run`): a wait longer than the socket timeout would surface as a
        dropped connection instead of a clear 503.
        """
        replicas = int(config.get("DURABLE_REPLICAS") or 0)
        socket_ms = int(float(config.get("REDIS_SOCKET_TIMEOUT") or 5.0) * 800)
        if replicas:
            socket_ms //= 2
        timeout = int(config.get("DURABILITY_TIMEOUT_MS") or 1000)
        return cls(replicas, max(1, min(timeout, socket_ms)))


def run(
    client: redis.Redis,
    script: LuaScript,
    keys: Sequence[str],
    args: Sequence[Any],
    durability: Durability | None = None,
) -> tuple[Any, Any]:
    """Run ``script``; with ``durability``, also ``WAITAOF`` in the same round trip.

    Returns:
        The script's reply and the ``WAITAOF`` reply (or None without ``durability``).
        Whether the wait succeeded is judged by :func:`check_durable`, because a script
        that refused (and wrote nothing) needs no durability.
    """
    def wait(pipe) -> None:
        # Timeout 0 would mean "wait forever"; never block an allocation without bound.
        timeout = max(1, durability.timeout_ms)
        if durability.replicas:
            # WAIT makes the master ask its replicas for an ack at once, and that ack
            # carries the replica's fsynced AOF offset. Without it, WAITAOF learns of the
            # replica's fsync only from its once-a-second ack: ~1000 ms per allocation
            # instead of ~1 ms (measured on Valkey 8.1). WAITAOF alone still decides.
            pipe.execute_command("WAIT", durability.replicas, timeout)
        pipe.execute_command("WAITAOF", 1, durability.replicas, timeout)

    replies = lua.run(client, script, keys, args, wait if durability is not None else None)
    return replies[0], (replies[-1] if durability is not None else None)


def check_durable(wait_reply: Any, durability: Durability) -> None:
    """Raise ``NotDurable`` unless ``WAITAOF`` confirmed the local fsync and the replicas.

    Replicas count only when they fsynced the write to their own AOF, so replicas must run
    with ``appendonly yes``; a plain ``WAIT`` would accept a replica that holds the write in
    memory only, which a simultaneous power loss of both machines could undo.
    """
    if isinstance(wait_reply, Exception):
        # e.g. "WAITAOF cannot be used when numlocal is set but appendonly is disabled"
        raise NotDurable(f"Durability could not be confirmed ({wait_reply}); retry the request")
    local, replicas = (int(x) for x in wait_reply)
    if local < 1 or replicas < durability.replicas:
        raise NotDurable(
            f"Not confirmed durable within {durability.timeout_ms} ms "
            f"(fsynced locally: {bool(local)}, replicas: {replicas}/{durability.replicas}); "
            "retry the same request"
        )
