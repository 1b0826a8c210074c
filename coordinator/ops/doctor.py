"""``invoice-sync doctor``: check the Redis and settings the coordinator would use.

Each check says what it found and, when it fails, what to change. The Redis checks are the ones
the numbering's guarantees rest on: a number acknowledged must survive a crash (AOF with
``appendfsync always``), a failover (replicas that hold every write, ``min-replicas-to-write``)
and memory pressure (``noeviction``: an evicting Redis may drop a counter and reissue numbers).
Then, per system with a central poll, whether that safety net works.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from cryptography.fernet import Fernet

from coordinator.auth.tokens import any_admin
from coordinator.clock import Clock, utcnow
from coordinator.ops import durability


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report: ✓, ✗, or ! (advice), what was found, and the fix."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    warning: bool = False

    def line(self) -> str:
        """Render as ``✓ name: detail``, ``✗ name: detail`` or ``! name: detail`` plus a fix."""
        mark = "✗" if not self.ok else ("!" if self.warning else "✓")
        text = f"{mark} {self.name}: {self.detail}"
        if (not self.ok or self.warning) and self.fix:
            text += f"\n    fix: {self.fix}"
        return text


def _finding_check(verdict: durability.Verdict, code: str, name: str, detail: str,
                   fix: str | None = None) -> Check:
    """A check that fails exactly when the shared verdict has problem ``code``."""
    finding = verdict.finding(code)
    problem = any(p.code == code for p in verdict.problems)
    return Check(name, not problem, detail, fix or (finding.message if finding else None),
                 warning=finding is not None and not problem)


def redis_checks(client: redis.Redis, config: Mapping[str, Any]) -> list[Check]:
    """Check reachability, persistence, replication, eviction and how writes are confirmed.

    The durability lines come from :func:`coordinator.ops.durability.assess`, the verdict the
    write path and ``/readyz`` use: a ✗ here is a 503 there, and the other way round.
    """
    wanted = int(config.get("DURABLE_REPLICAS") or 0)
    try:
        client.ping()
        verdict = durability.probe_verdict(client, wanted)
    except redis.RedisError as error:
        return [Check("Redis reachable", False, f"{type(error).__name__}: {error}",
                      "start Redis or fix INVOICE_SYNC_REDIS_URL / INVOICE_SYNC_SENTINELS / "
                      "INVOICE_SYNC_REDIS_CLUSTER (and the password in the URL or "
                      "INVOICE_SYNC_REDIS_PASSWORD)")]
    facts = verdict.facts
    checks = [Check("Redis reachable", True, f"{facts.name} {facts.version}")]
    if verdict.nodes:
        checks.append(_finding_check(
            verdict, durability.CLUSTER, "Cluster",
            f"{len(verdict.nodes)} masters ({', '.join(verdict.nodes)}); every durability "
            "line below holds for each of them"))
        checks.append(_finding_check(verdict, durability.SLOTS, "Cluster slots served",
                                     "16384 of 16384" if durability.SLOTS not in
                                     verdict.codes() else "some are not"))
        checks.append(_finding_check(
            verdict, durability.UNREACHABLE, "Cluster masters reachable",
            "all" if durability.UNREACHABLE not in verdict.codes() else "not all"))
    checks.append(_finding_check(
        verdict, durability.AOF_OFF, "AOF on",
        "appendonly yes" if facts.aof_enabled else "appendonly no",
        "set `appendonly yes` in redis.conf (CONFIG SET appendonly yes, then CONFIG REWRITE)"))
    fsync = facts.appendfsync
    checks.append(_finding_check(
        verdict, durability.FSYNC, "appendfsync always",
        f"appendfsync {fsync}" if fsync is not None else "unknown (CONFIG GET refused)"))
    checks[-1] = _with_advice(checks[-1], verdict, durability.SLOW_FSYNC)
    if verdict.strategy == durability.WAITAOF:
        how = "WAITAOF after each write (the server has it: Redis/Valkey 7.2+)"
    elif verdict.strategy == durability.FSYNC_ALWAYS:
        how = (f"the reply itself: {facts.name} {facts.version} has no WAITAOF, and with "
               "`appendfsync always` it replies only after fsync (policy read back per write)")
    else:
        how = "nothing: writes answer 503 until the problems marked ✗ are fixed"
    confirmable = not any(p.code in (durability.AOF_OFF, durability.FSYNC)
                          for p in verdict.problems)
    checks.append(Check("write confirmation", confirmable, how,
                        "see the AOF and appendfsync lines"))
    checks.append(_finding_check(verdict, durability.ROLE, "role master", f"role {facts.role}"))
    checks.append(_finding_check(
        verdict, durability.REPLICAS, "replicas connected",
        f"{facts.replicas_in_sync} in sync of {facts.connected_replicas} connected, "
        f"INVOICE_SYNC_DURABLE_REPLICAS={wanted}"))
    if wanted:
        known = facts.min_replicas_to_write
        checks.append(_finding_check(
            verdict, durability.MIN_REPLICAS, "min-replicas-to-write",
            f"min-replicas-to-write {'unknown (CONFIG disabled)' if known is None else known}"))
    checks.append(_finding_check(
        verdict, durability.EVICTION, "maxmemory-policy noeviction",
        f"maxmemory-policy {facts.maxmemory_policy}",
        "set `maxmemory-policy noeviction` in redis.conf (CONFIG SET maxmemory-policy "
        "noeviction, then CONFIG REWRITE)"))

    checks.append(queue_check(config))
    admins = bool(config.get("ADMIN_TOKEN")) or any_admin(client)
    checks.append(Check("admin token", admins,
                        "present" if admins else "no admin token in Redis or the environment",
                        "run `invoice-sync token create-admin` (or start `invoice-sync serve` "
                        "once, which creates one)"))
    return checks


def _with_advice(check: Check, verdict: durability.Verdict, code: str) -> Check:
    """Mark a passing ``check`` with ! and the advice ``code`` when the verdict gives it."""
    finding = verdict.finding(code)
    if not check.ok or finding is None:
        return check
    return Check(check.name, True, check.detail, finding.message, warning=True)


def queue_check(config: Mapping[str, Any]) -> Check:
    """Check where the sync jobs (RQ) go: RQ does not run on a Cluster."""
    url = config.get("QUEUE_REDIS_URL")
    if not url:
        if config.get("REDIS_CLUSTER"):
            return Check("job queue", False, "INVOICE_SYNC_QUEUE_REDIS_URL is not set",
                         "RQ does not run on a Redis Cluster: set INVOICE_SYNC_QUEUE_REDIS_URL "
                         "to a plain Redis (redis://host:6379/0) for the sync jobs; without it "
                         "syncs answer 503")
        return Check("job queue", True, "sync jobs on the data Redis")
    try:
        queue = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        try:
            queue.ping()
        finally:
            queue.close()
    except (redis.RedisError, ValueError) as error:
        return Check("job queue", False, f"INVOICE_SYNC_QUEUE_REDIS_URL: {type(error).__name__}",
                     "start that Redis or fix INVOICE_SYNC_QUEUE_REDIS_URL")
    return Check("job queue", True, "sync jobs on INVOICE_SYNC_QUEUE_REDIS_URL (reachable)")


def secret_key_check(config: Mapping[str, Any], key_file: Path | None = None) -> Check:
    """Check that the secret keys (INVOICE_SYNC_SECRET_KEYS, or ``key_file``) are Fernet keys."""
    fix = ("set INVOICE_SYNC_SECRET_KEYS to a Fernet key (`python -c 'from cryptography.fernet "
           "import Fernet; print(Fernet.generate_key().decode())'`); keep old keys after the "
           "new one when rotating")
    raw = config.get("SECRET_KEYS")
    if not raw:
        return Check("secret keys", False, "INVOICE_SYNC_SECRET_KEYS is not set", fix)
    keys_ = [key.strip() for key in str(raw).split(",") if key.strip()]
    for position, key in enumerate(keys_, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            return Check("secret keys", False, f"key {position} is not a valid Fernet key", fix)
    source = f" from {key_file}" if key_file else ""
    return Check("secret keys", True, f"{len(keys_)} Fernet key(s){source}")


STALE_POLLS = 3
"""A central poll this many intervals (plus five minutes) late means nothing is running it."""


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def central_poll_checks(client: redis.Redis, now: dt.datetime) -> list[Check]:
    """Check each system's central poll: it runs, its last run went well, its role suffices.

    One line per system with ``central_poll`` on; ✗ when the last run failed, when WHMCS
    refused an action the poll needs (its exact answer, see ``forecaster.poll_access``), or
    when no run happened for several intervals (no worker with the scheduler).
    """
    from coordinator.forecaster import central_poll, poll_access
    from coordinator.systems import registry

    checks = []
    for system in registry.list_systems(client):
        if not system.get("central_poll"):
            continue
        name, minutes = system["name"], int(system["central_poll_minutes"])
        label = f"central poll {name}"
        last = central_poll.status(client, name)
        if last is None:
            checks.append(Check(label, True, f"on, every {minutes} min; no run yet",
                                "a worker with the scheduler runs it (`invoice-sync serve`, or "
                                "`invoice-sync worker --with-scheduler`); `invoice-sync "
                                f"central-poll {name}` runs one now", warning=True))
            continue
        if last["missing_actions"]:
            access = poll_access.Access(tuple(last["missing_actions"]))
            checks.append(Check(
                label, False, f"{access.describe()} (checked {last['access_checked_at']}; "
                f"{last['failures']} failed run(s) in a row, no number taken)",
                f"give that API role {', '.join(last['missing_actions'])}, then "
                f"`invoice-sync central-poll {name}`"))
            continue
        if last["state"] != "done":
            checks.append(Check(
                label, False, f"last run {last['at']} failed ({last['failures']} in a row, last "
                f"success {last['last_ok_at'] or 'never'}): {last['message']}",
                f"fix what the message names, then `invoice-sync central-poll {name}`"))
            continue
        late = (now - _at(last["at"])).total_seconds()
        if late > STALE_POLLS * minutes * 60 + 300:
            checks.append(Check(
                label, False, f"last run {last['at']}, {int(late // 60)} min ago, but it is due "
                f"every {minutes} min",
                "no worker with the scheduler is running: start `invoice-sync worker "
                "--with-scheduler` (or `invoice-sync serve`)"))
            continue
        checks.append(Check(label, True, f"last run {last['at']}: {last['message']}"))
    return checks


def run(
    config: Mapping[str, Any], client_factory: Callable[[Mapping[str, Any]], redis.Redis] | None,
    key_file: Path | None = None, clock: Clock = utcnow,
) -> list[Check]:
    """Run every check. ``client_factory`` None means no Redis is configured at all.

    ``key_file`` names where the secret keys came from when not from the environment.
    """
    checks: list[Check] = []
    if client_factory is None:
        checks.append(Check(
            "Redis reachable", False, "no Redis configured and no embedded server running",
            "set INVOICE_SYNC_REDIS_URL or INVOICE_SYNC_SENTINELS, or start `invoice-sync "
            "serve` (embedded Valkey) with the same --data-dir",
        ))
    else:
        try:
            client = client_factory(config)
        except (redis.RedisError, ValueError, RuntimeError) as error:
            checks.append(Check("Redis reachable", False, str(error),
                                "fix INVOICE_SYNC_REDIS_URL / INVOICE_SYNC_SENTINELS"))
        else:
            try:
                found = redis_checks(client, config)
                checks += found
                if found[0].ok:  # Redis answers: look at what it holds
                    checks += central_poll_checks(client, clock())
            finally:
                client.close()
    checks.append(secret_key_check(config, key_file))
    return checks


