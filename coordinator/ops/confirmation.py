"""Confirm each write durable the way the server allows, and cache the verdict for the write path.

:class:`Durability` says how one write is confirmed (``WAITAOF``, or on servers older than 7.2
the fsync policy read back and ``WAIT``) and judges the replies; :class:`Guard` keeps the
verdict of :func:`coordinator.ops.durability.probe_verdict` for the write path, refreshed every
``DURABILITY_RECHECK_SECONDS``, by ``/readyz``, and whenever a confirmation fails for a reason
the verdict did not foresee. See ``coordinator/ops/durability.py`` for the decision itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from coordinator.exceptions import NotDurable
from coordinator.ops.durability import CLUSTER, WAITAOF, Verdict, probe_verdict


@dataclass(frozen=True)
class Durability:
    """How a write is confirmed durable: the strategy, the replicas, the wait.

    Usage::

        durability = guard.current(client)          # raises NotDurable when it cannot be
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(...)                           # the write
        durability.queue(pipe)                      # same connection, same round trip
        replies = pipe.execute(raise_on_error=False)
        durability.confirm(replies[-durability.commands:])
    """

    replicas: int = 0
    timeout_ms: int = 1000
    strategy: str = WAITAOF
    guard: Guard | None = field(default=None, compare=False, repr=False)
    verdict: Verdict | None = field(default=None, compare=False, repr=False)

    def on_node(self, address: str) -> Durability:
        """On a Cluster: how to confirm a write on the master at ``address``.

        Raises:
            NotDurable: that master cannot keep the write, or is not known (yet).
        """
        nodes = dict(self.verdict.by_node) if self.verdict is not None else {}
        if not nodes:
            return self
        verdict = nodes.get(address)
        if verdict is None:
            self._forget()  # the slots moved since the last probe
            raise NotDurable(f"Cluster master {address} is new to the coordinator; retry")
        if not verdict.ok:
            # Probe again next time: a failover in progress changes this within seconds.
            self._forget()
            raise NotDurable(f"Redis master {address} is not durable: "
                             + "; ".join(p.message for p in verdict.problems))
        return replace(self, strategy=verdict.strategy)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], strategy: str = WAITAOF,
                    guard: Guard | None = None) -> Durability:
        """Read ``DURABLE_REPLICAS`` and ``DURABILITY_TIMEOUT_MS``.

        The waits are kept under 80% of ``REDIS_SOCKET_TIMEOUT`` together (with replicas there
        are two): a wait longer than the socket timeout would surface as a dropped connection
        instead of a clear 503.
        """
        replicas = int(config.get("DURABLE_REPLICAS") or 0)
        socket_ms = int(float(config.get("REDIS_SOCKET_TIMEOUT") or 5.0) * 800)
        if replicas:
            socket_ms //= 2
        timeout = int(config.get("DURABILITY_TIMEOUT_MS") or 1000)
        return cls(replicas, max(1, min(timeout, socket_ms)), strategy, guard)

    @property
    def commands(self) -> int:
        """How many commands :meth:`queue` adds (their replies go to :meth:`confirm`)."""
        return 2 if self.replicas else 1

    def queue(self, pipe: Any) -> None:
        """Queue the confirmation after the write, on the write's connection."""
        # Timeout 0 would mean "wait forever"; never block a request without bound.
        timeout = max(1, self.timeout_ms)
        if self.strategy == WAITAOF:
            if self.replicas:
                # WAIT makes the master ask its replicas for an ack at once, and that ack
                # carries the replica's fsynced AOF offset. Without it, WAITAOF learns of the
                # replica's fsync only from its once-a-second ack: ~1000 ms per write
                # instead of ~1 ms (measured on Valkey 8.1). WAITAOF alone still decides.
                pipe.execute_command("WAIT", self.replicas, timeout)
            pipe.execute_command("WAITAOF", 1, self.replicas, timeout)
            return
        # Read the policy back in the same batch as the write: the AOF buffer holding the
        # write is flushed under this policy before the replies of the batch are sent.
        pipe.execute_command("CONFIG", "GET", "append*")
        if self.replicas:
            pipe.execute_command("WAIT", self.replicas, timeout)

    def confirm(self, replies: Sequence[Any]) -> None:
        """Raise ``NotDurable`` unless the replies of :meth:`queue` confirm the write.

        With WAITAOF, replicas count only when they fsynced the write to their own AOF, so
        replicas must run with ``appendonly yes``.
        """
        replies = list(replies)
        if self.strategy == WAITAOF:
            wait_reply = replies[-1]
            if isinstance(wait_reply, Exception):
                # "unknown command" after a failover to an older server, or AOF turned off:
                # learn the server again before the next write.
                self._forget()
                raise NotDurable(
                    f"Durability could not be confirmed ({wait_reply}); retry the request")
            local, replicas = (int(x) for x in wait_reply)
            if local < 1 or replicas < self.replicas:
                raise NotDurable(
                    f"Not confirmed durable within {self.timeout_ms} ms "
                    f"(fsynced locally: {bool(local)}, replicas: {replicas}/{self.replicas}); "
                    "retry the same request")
            return
        config = replies[0]
        if isinstance(config, Exception) or not isinstance(config, dict):
            self._forget()
            raise NotDurable(f"Durability could not be confirmed (CONFIG GET: {config}); "
                             "retry the request")
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            self._forget()
            raise NotDurable(
                "Not confirmed durable: the server runs appendonly "
                f"{config.get('appendonly')!r}, appendfsync {config.get('appendfsync')!r} and "
                "has no WAITAOF; set `appendonly yes` and `appendfsync always`")
        if self.replicas:
            acked = replies[1]
            if isinstance(acked, Exception) or int(acked) < self.replicas:
                raise NotDurable(
                    f"Not confirmed on {self.replicas} replica(s) within {self.timeout_ms} ms "
                    f"(WAIT answered {acked}); retry the same request")

    def forget(self) -> None:
        """Make the next write probe the server again (after a failover, a refusal)."""
        self._forget()

    def _forget(self) -> None:
        if self.guard is not None:
            self.guard.forget()


class Guard:
    """The write path's view of :func:`assess`: facts probed at most every ``recheck`` seconds.

    ``/readyz`` refreshes it (:meth:`refresh`) and a confirmation that fails for a reason the
    facts did not foresee forgets them, so a change of server (failover, upgrade) or of its
    settings is learned by the next write.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.replicas = int(config.get("DURABLE_REPLICAS") or 0)
        self.recheck = float(config.get("DURABILITY_RECHECK_SECONDS") or 0)
        self._lock = threading.Lock()
        self._verdict: tuple[float, Verdict] | None = None

    def forget(self) -> None:
        """Drop the cached facts: the next write probes the server again."""
        self._verdict = None

    def refresh(self, client: redis.Redis) -> Verdict:
        """Probe the server now and remember the verdict."""
        verdict = probe_verdict(client, self.replicas)
        self._verdict = (time.monotonic(), verdict)
        return verdict

    def verdict(self, client: redis.Redis) -> Verdict:
        """The remembered verdict, or a fresh one when it is older than ``recheck``."""
        cached = self._verdict
        if cached is None or time.monotonic() - cached[0] >= self.recheck:
            with self._lock:
                cached = self._verdict
                if cached is None or time.monotonic() - cached[0] >= self.recheck:
                    return self.refresh(client)
        return cached[1]

    def current(self, client: redis.Redis) -> Durability:
        """How to confirm the next write, or ``NotDurable`` (503) saying what to fix.

        Raises:
            NotDurable: the server cannot keep what it acknowledges (nothing was written).
            redis.RedisError: the server cannot be reached.
        """
        verdict = self.verdict(client)
        if verdict.by_node:
            # A Cluster: each write is judged by the master of its slot (Durability.on_node);
            # here only what stops every write.
            blocking = [p for p in verdict.problems if p.code == CLUSTER]
            if blocking:
                raise NotDurable("Redis Cluster is not durable: "
                                 + "; ".join(p.message for p in blocking))
            return replace(Durability.from_config(self.config, WAITAOF, self), verdict=verdict)
        if not verdict.ok:
            raise NotDurable("Redis is not durable: "
                             + "; ".join(p.message for p in verdict.problems))
        return Durability.from_config(self.config, verdict.strategy, self)


EXTENSION = "invoice_sync.durability_guard"


def guard_for(app: Any) -> Guard:
    """Return the app's :class:`Guard` (made from its config on first use)."""
    guard = app.extensions.get(EXTENSION)
    if guard is None:
        guard = app.extensions[EXTENSION] = Guard(app.config)
    return guard
