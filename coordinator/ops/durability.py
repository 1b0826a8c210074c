"""Decide whether the Redis we write to keeps what it acknowledges, and how writes confirm it.

One decision, :func:`assess`, serves the allocation path, ``/readyz`` and ``invoice-sync
doctor``: they judge the same :class:`ServerFacts` with the same rules, so the coordinator is
never ready while a write would be refused for durability, and never refuses a write while the
doctor says all is well (docs/REDIS.md has the table per server version and the sources).

How a write is confirmed depends on the server:

- ``waitaof`` (Redis/Valkey >= 7.2): ``WAITAOF 1 <replicas> <timeout>`` after the write, on the
  same connection, in the same round trip. It answers how many nodes fsynced the write.
- ``fsync-always`` (Redis < 7.2, e.g. Debian's 7.0): no WAITAOF. With ``appendonly yes`` and
  ``appendfsync always`` the server writes and fsyncs its AOF buffer in ``beforeSleep``, before
  it sends any reply of that event-loop iteration (redis src/server.c, ``flushAppendOnlyFile``
  before ``handleClientsWithPendingWritesUsingThreads``), so the reply itself is the proof. The
  policy is read back (``CONFIG GET append*``) in the same round trip as the write, so a policy
  changed at runtime is noticed on the next write, not later; replicas are waited for with
  ``WAIT`` (they have the write; whether they fsynced it, only WAITAOF can tell).

The confirmation itself, and the write path's cache of the verdict, are in
``coordinator/ops/confirmation.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.cluster import RedisCluster

EVICTION_SAFE_POLICIES = frozenset({"noeviction"})
"""maxmemory policies that never delete keys. Any other (allkeys-lru, volatile-ttl, ...) may
evict a sequence counter or ledger entry when memory fills: numbers would be handed out twice."""

WAITAOF = "waitaof"
FSYNC_ALWAYS = "fsync-always"

# Problem codes: any of them makes writes answer 503, /readyz 503 and the doctor fail.
AOF_OFF = "aof_off"
FSYNC = "fsync"
ROLE = "role"
REPLICAS = "replicas"
EVICTION = "eviction"
CLUSTER = "cluster"
SLOTS = "slots"
UNREACHABLE = "unreachable"
# Advice codes: shown by the doctor and /readyz, writes still go through.
SLOW_FSYNC = "slow_fsync"
MIN_REPLICAS = "min_replicas"


def eviction_problem(policy: str | None) -> str | None:
    """Say what to fix when ``policy`` (maxmemory-policy) may evict keys; None when it cannot."""
    if policy is None or policy in EVICTION_SAFE_POLICIES:
        return None
    return (
        f"maxmemory-policy is {policy!r}: set `maxmemory-policy noeviction`; an evicting Redis "
        "can drop counters and ledger entries and hand out numbers twice"
    )


def _version_tuple(version: str | None) -> tuple[int, ...]:
    parts = []
    for part in str(version or "0").split("."):
        parts.append(int(part) if part.isdigit() else 0)
    return tuple(parts)


def _replicas_in_sync(replication: Mapping[str, Any]) -> int:
    """How many replicas INFO lists in state ``online`` (the others are in their first sync:
    ``wait_bgsave``, ``send_bulk``). A server that lists none counts its ``connected_slaves``."""
    listed = [entry for name, entry in replication.items()
              if name.startswith("slave") and name[5:].isdigit() and isinstance(entry, Mapping)]
    if not listed:
        return int(replication.get("connected_slaves", 0))
    return sum(1 for entry in listed if entry.get("state") == "online")


@dataclass(frozen=True)
class ServerFacts:
    """What one server told us about itself (see :meth:`probe`)."""

    name: str = "redis"
    version: str = "?"
    redis_version: str = "?"
    waitaof: bool = False
    aof_enabled: bool = False
    appendfsync: str | None = None
    role: str | None = None
    connected_replicas: int = 0
    #: Replicas the master streams writes to (``state=online``): a replica still in its first
    #: sync is connected but acknowledges nothing, so ``WAIT``/``WAITAOF`` cannot count it.
    replicas_in_sync: int = 0
    min_replicas_to_write: int | None = None
    maxmemory_policy: str | None = None

    @classmethod
    def probe(cls, client: redis.Redis) -> ServerFacts:
        """Ask the server, in one round trip, what it is and how it persists.

        ``WAITAOF 0 0 1`` waits for nothing: it answers at once where the command exists (7.2+)
        and "unknown command" where it does not; that is the capability, not the version
        string (Valkey 8 reports ``redis_version:7.2.4``; forks report what they like).

        Raises:
            redis.RedisError: the server cannot be reached.
        """
        pipe = client.pipeline(transaction=False)
        pipe.info("server")
        pipe.info("persistence")
        pipe.info("replication")
        pipe.info("memory")
        pipe.execute_command("CONFIG", "GET", "append*")
        pipe.execute_command("CONFIG", "GET", "min-replicas-to-write")
        pipe.execute_command("WAITAOF", 0, 0, 1)
        server, persistence, replication, memory, append, min_replicas, waitaof = pipe.execute(
            raise_on_error=False)
        for reply in (server, persistence, replication, memory):
            if isinstance(reply, Exception):
                raise reply
        if isinstance(waitaof, redis.ResponseError):
            # "unknown command" before 7.2; a replica refuses WAITAOF even where it exists.
            supported = ("unknown command" not in str(waitaof).lower()
                         and _version_tuple(server.get("redis_version")) >= (7, 2))
        else:
            supported = not isinstance(waitaof, Exception)
        append = append if isinstance(append, dict) else {}
        raw_min = (min_replicas.get("min-replicas-to-write")
                   if isinstance(min_replicas, dict) else None)
        return cls(
            name=server.get("server_name") or "redis",
            version=str(server.get("valkey_version") or server.get("redis_version") or "?"),
            redis_version=str(server.get("redis_version") or "?"),
            waitaof=supported,
            aof_enabled=bool(int(persistence.get("aof_enabled", 0))),
            appendfsync=append.get("appendfsync"),
            role=replication.get("role"),
            connected_replicas=int(replication.get("connected_slaves", 0)),
            replicas_in_sync=_replicas_in_sync(replication),
            min_replicas_to_write=(int(raw_min) if raw_min is not None
                                   and str(raw_min).isdigit() else None),
            # INFO, not CONFIG GET: managed services that hide CONFIG still report it here.
            maxmemory_policy=memory.get("maxmemory_policy"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The facts as shown by ``/readyz``."""
        return {
            "server": f"{self.name} {self.version}", "waitaof": self.waitaof,
            "aof_enabled": self.aof_enabled, "appendfsync": self.appendfsync,
            "role": self.role, "connected_replicas": self.connected_replicas,
            "replicas_in_sync": self.replicas_in_sync,
            "min_replicas_to_write": self.min_replicas_to_write,
            "maxmemory_policy": self.maxmemory_policy,
        }


@dataclass(frozen=True)
class Finding:
    """One problem (blocks writes) or piece of advice (does not), with what to do about it."""

    code: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """The one answer to "is this server durable enough?" and, if so, how writes confirm it.

    On a Cluster, ``facts`` are the weakest of its masters', ``problems`` those of all of them
    (each naming its master), and ``by_node`` each master's own verdict: a write is refused
    only when the master of its slot cannot keep it, ``/readyz`` and the doctor fail when any
    master cannot.
    """

    facts: ServerFacts
    problems: tuple[Finding, ...] = ()
    advice: tuple[Finding, ...] = ()
    by_node: tuple[tuple[str, Verdict], ...] = ()

    @property
    def nodes(self) -> tuple[str, ...]:
        """The ``host:port`` of every master of a Cluster; empty for one server."""
        return tuple(address for address, _ in self.by_node)

    @property
    def ok(self) -> bool:
        """Whether writes may be acknowledged."""
        return not self.problems

    @property
    def strategy(self) -> str | None:
        """``waitaof``, ``fsync-always``, or None when nothing can confirm a write."""
        if not self.ok:
            return None
        return WAITAOF if self.facts.waitaof else FSYNC_ALWAYS

    def codes(self) -> set[str]:
        """Codes of every problem and piece of advice."""
        return {f.code for f in (*self.problems, *self.advice)}

    def finding(self, code: str) -> Finding | None:
        """The problem or advice with ``code``, if any."""
        return next((f for f in (*self.problems, *self.advice) if f.code == code), None)


def assess(facts: ServerFacts, replicas: int) -> Verdict:
    """Judge ``facts`` for a coordinator that wants ``replicas`` replicas to hold each write."""
    problems: list[Finding] = []
    advice: list[Finding] = []
    server = f"{facts.name} {facts.version}"
    if facts.role != "master":
        problems.append(Finding(ROLE, f"this Redis is a {facts.role}: point the coordinator "
                                      "at the master (or use INVOICE_SYNC_SENTINELS)"))
    if not facts.aof_enabled:
        problems.append(Finding(AOF_OFF, "AOF is off: set `appendonly yes` and "
                                         "`appendfsync always` in redis.conf"))
    elif facts.appendfsync != "always":
        if not facts.waitaof and facts.appendfsync is None:
            problems.append(Finding(FSYNC, (
                f"{server} has no WAITAOF (added in 7.2) and refuses CONFIG GET, so nothing "
                "confirms that a write is on disk: allow `CONFIG GET` for the coordinator's "
                "user (and set `appendfsync always`), or use Redis/Valkey 7.2+")))
        elif not facts.waitaof:
            problems.append(Finding(FSYNC, (
                f"appendfsync is {facts.appendfsync!r} and {server} has no WAITAOF (added in "
                "7.2): set `appendfsync always` (CONFIG SET appendfsync always, then CONFIG "
                "REWRITE) so the server replies only after fsync, or upgrade to 7.2+")))
        elif facts.appendfsync is not None:
            advice.append(Finding(SLOW_FSYNC, (
                f"appendfsync is {facts.appendfsync!r}: every write waits (WAITAOF) for the "
                "next fsync, up to a second, and answers 503 past INVOICE_SYNC_DURABILITY_"
                "TIMEOUT_MS; set `appendfsync always`")))
    eviction = eviction_problem(facts.maxmemory_policy)
    if eviction:
        problems.append(Finding(EVICTION, eviction))
    if facts.replicas_in_sync < replicas:
        syncing = facts.connected_replicas - facts.replicas_in_sync
        problems.append(Finding(REPLICAS, (
            f"{facts.replicas_in_sync} replica(s) connected and in sync"
            + (f" ({syncing} more still in their first sync)" if syncing > 0 else "")
            + f", INVOICE_SYNC_DURABLE_REPLICAS wants {replicas}: start the missing replica(s) "
            "(`replicaof <master> <port>`, with `appendonly yes`), wait for their sync, or "
            "lower INVOICE_SYNC_DURABLE_REPLICAS")))
    if replicas and (facts.min_replicas_to_write or 0) < 1:
        known = facts.min_replicas_to_write
        advice.append(Finding(MIN_REPLICAS, (
            f"min-replicas-to-write is {'unknown' if known is None else known}: set "
            "`min-replicas-to-write 1` and `min-replicas-max-lag 10` so a master cut off from "
            "its replicas refuses writes it could lose in a failover")))
    return Verdict(facts, tuple(problems), tuple(advice))


def _weakest(facts: list[ServerFacts]) -> ServerFacts:
    """One ServerFacts standing for several masters: each fact at its least durable."""
    first = facts[0]
    fsyncs = [f.appendfsync for f in facts]
    policies = [f.maxmemory_policy for f in facts]
    return ServerFacts(
        name=first.name, version=first.version, redis_version=first.redis_version,
        waitaof=all(f.waitaof for f in facts), aof_enabled=all(f.aof_enabled for f in facts),
        appendfsync=next((x for x in fsyncs if x != "always"), "always"),
        role=next((f.role for f in facts if f.role != "master"), "master"),
        connected_replicas=min(f.connected_replicas for f in facts),
        replicas_in_sync=min(f.replicas_in_sync for f in facts),
        min_replicas_to_write=min((f.min_replicas_to_write or 0) for f in facts),
        maxmemory_policy=next((p for p in policies if eviction_problem(p)), policies[0]),
    )


def probe_verdict(client: redis.Redis, replicas: int) -> Verdict:
    """Probe and judge the server, or every master of a Cluster (each must hold up).

    Raises:
        redis.RedisError: the server (on a Cluster: every master) cannot be reached.
    """
    if not isinstance(client, RedisCluster):
        return assess(ServerFacts.probe(client), replicas)
    verdicts: list[tuple[str, Verdict]] = []
    reachable: list[ServerFacts] = []
    for node in client.get_primaries():
        address = f"{node.host}:{node.port}"
        try:
            verdict = assess(ServerFacts.probe(node.redis_connection), replicas)
            reachable.append(verdict.facts)
        except redis.RedisError as error:
            verdict = Verdict(ServerFacts(), (Finding(UNREACHABLE, (
                f"master unreachable ({type(error).__name__}): its slots answer 503 until "
                "its replica is promoted")),))
        verdicts.append((address, verdict))
    if len(reachable) < len(verdicts) or any(f.role != "master" for f in reachable):
        try:  # a master died or was demoted: learn who serves its slots, for the next probe
            client.nodes_manager.initialize()
        except redis.RedisError:
            pass
    if not reachable:
        raise redis.ConnectionError("no master of the Cluster answers")
    problems = [Finding(p.code, f"{address}: {p.message}")
                for address, v in verdicts for p in v.problems]
    advice = [Finding(a.code, f"{address}: {a.message}")
              for address, v in verdicts for a in v.advice]
    info = _cluster_info(client)
    if info.get("cluster_state") != "ok":
        problems.append(Finding(CLUSTER, (
            f"cluster_state {info.get('cluster_state')}: the Cluster refuses writes "
            "(CLUSTER INFO, `valkey-cli --cluster check`)")))
    elif int(info.get("cluster_slots_ok", 0)) < 16384:
        # Only the writes to those slots fail (cluster-require-full-coverage no).
        problems.append(Finding(SLOTS, (
            f"{info.get('cluster_slots_ok')} of 16384 slots served: a master is down and its "
            "replica not (yet) promoted")))
    return Verdict(_weakest(reachable), tuple(problems), tuple(advice), tuple(verdicts))


def _cluster_info(client: RedisCluster) -> dict[str, str]:
    for node in client.get_primaries():
        try:
            info = node.redis_connection.execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            continue
        if isinstance(info, dict):
            return info
        return dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
    return {}


@dataclass
class DurabilityReport:
    """What ``check`` found: ``problems`` is empty when the server is durable enough."""

    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


def report(verdict: Verdict) -> DurabilityReport:
    """Turn a verdict into what ``/readyz`` shows."""
    facts = verdict.facts.as_dict()
    facts["confirmation"] = verdict.strategy
    if verdict.nodes:
        facts["cluster_masters"] = list(verdict.nodes)
    return DurabilityReport(facts, [p.message for p in verdict.problems],
                            [a.message for a in verdict.advice])


def check(client: redis.Redis, config: Mapping[str, Any]) -> DurabilityReport:
    """Probe and judge the server now; say what to fix for each shortfall.

    Raises:
        redis.RedisError: the server cannot be reached.
    """
    return report(probe_verdict(client, int(config.get("DURABLE_REPLICAS") or 0)))
