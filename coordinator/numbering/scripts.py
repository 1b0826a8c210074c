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
from redis.exceptions import NoScriptError

from coordinator.ops.durability import Durability


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
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        if durability is not None:
            durability.queue(pipe)
        replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[0], NoScriptError) and attempt == 1:
            client.script_load(script.source)
            continue
        if isinstance(replies[0], Exception):
            raise replies[0]
        return replies[0], (replies[1:] if durability is not None else None)
    raise AssertionError("unreachable")  # pragma: no cover


def check_durable(wait_replies: Any, durability: Durability) -> None:
    """Raise ``NotDurable`` unless the confirmation queued with the write holds (see
    :meth:`coordinator.ops.durability.Durability.confirm`)."""
    durability.confirm(wait_replies)
