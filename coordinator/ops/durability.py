"""Check that the Redis we write to keeps what it acknowledges (AOF fsync, replicas)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

EVICTION_SAFE_POLICIES = frozenset({"noeviction"})
"""maxmemory policies that never delete keys. Any other (allkeys-lru, volatile-ttl, ...) may
evict a sequence counter or ledger entry when memory fills: numbers would be handed out twice."""


def eviction_problem(policy: str | None) -> str | None:
    """Say what to fix when ``policy`` (maxmemory-policy) may evict keys; None when it cannot."""
    if policy is None or policy in EVICTION_SAFE_POLICIES:
        return None
    return (
        f"maxmemory-policy is {policy!r}: set `maxmemory-policy noeviction`; an evicting Redis "
        "can drop counters and ledger entries and hand out numbers twice"
    )


@dataclass
class DurabilityReport:
    """What ``check`` found: ``problems`` is empty when the server is durable enough."""

    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


def check(client: redis.Redis, config: Mapping[str, Any]) -> DurabilityReport:
    """Inspect persistence and replication; say what to fix for each shortfall.

    Raises:
        redis.RedisError: the server cannot be reached.
    """
    report = DurabilityReport()
    persistence = client.info("persistence")
    replication = client.info("replication")
    report.facts["aof_enabled"] = bool(int(persistence.get("aof_enabled", 0)))
    report.facts["role"] = replication.get("role")
    report.facts["connected_replicas"] = int(replication.get("connected_slaves", 0))
    try:
        fsync = client.config_get("appendfsync").get("appendfsync")
    except redis.ResponseError:
        # Managed services often disable CONFIG; WAITAOF still proves each write is on disk.
        fsync = None
    report.facts["appendfsync"] = fsync
    # INFO, not CONFIG GET: managed services that hide CONFIG still report the policy here.
    report.facts["maxmemory_policy"] = client.info("memory").get("maxmemory_policy")

    if not report.facts["aof_enabled"]:
        report.problems.append(
            "AOF is off: set `appendonly yes` and `appendfsync always` in redis.conf"
        )
    elif fsync not in (None, "always"):
        report.problems.append(
            f"appendfsync is {fsync!r}: set `appendfsync always` so every acknowledged "
            "number is on disk (allocations still wait with WAITAOF, at a latency cost)"
        )
    eviction = eviction_problem(report.facts["maxmemory_policy"])
    if eviction:
        report.problems.append(eviction)
    if report.facts["role"] != "master":
        report.problems.append("this Redis is a replica: point the coordinator at the master")
    wanted = int(config.get("DURABLE_REPLICAS") or 0)
    if report.facts["connected_replicas"] < wanted:
        report.problems.append(
            f"{report.facts['connected_replicas']} replica(s) connected, "
            f"INVOICE_SYNC_DURABLE_REPLICAS wants {wanted}: allocations will answer 503"
        )
    return report
