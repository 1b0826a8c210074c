"""``invoice-sync doctor``: check the Redis and settings the coordinator would use.

Each check says what it found and, when it fails, what to change. The Redis checks are the ones
the numbering's guarantees rest on: a number acknowledged must survive a crash (AOF with
``appendfsync always``), a failover (replicas that hold every write, ``min-replicas-to-write``)
and memory pressure (``noeviction``: an evicting Redis may drop a counter and reissue numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from cryptography.fernet import Fernet

from coordinator.auth.tokens import any_admin
from coordinator.ops import durability


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report: ✓ or ✗, what was found, and the fix when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def line(self) -> str:
        """Render as ``✓ name: detail`` or ``✗ name: detail`` plus an indented fix."""
        mark = "✓" if self.ok else "✗"
        text = f"{mark} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f"\n    fix: {self.fix}"
        return text


def _config_get(client: redis.Redis, name: str) -> str | None:
    """CONFIG GET one value; None where the server (often a managed one) refuses CONFIG."""
    try:
        return client.config_get(name).get(name)
    except redis.ResponseError:
        return None


def _waitaof_supported(client: redis.Redis) -> bool:
    # WAITAOF 0 0 waits for nothing and answers at once where the command exists (7.2+).
    try:
        client.execute_command("WAITAOF", 0, 0, 1)
    except redis.ResponseError:
        return False
    return True


def redis_checks(client: redis.Redis, config: Mapping[str, Any]) -> list[Check]:
    """Check reachability, version, persistence, replication, eviction and WAITAOF."""
    try:
        client.ping()
        server = client.info("server")
    except redis.RedisError as error:
        return [Check("Redis reachable", False, f"{type(error).__name__}: {error}",
                      "start Redis or fix INVOICE_SYNC_REDIS_URL / INVOICE_SYNC_SENTINELS "
                      "(and the password in the URL or INVOICE_SYNC_REDIS_PASSWORD)")]
    name = server.get("server_name") or "redis"
    version = server.get("valkey_version") or server.get("redis_version")
    checks = [Check("Redis reachable", True, f"{name} {version}")]

    persistence = client.info("persistence")
    replication = client.info("replication")
    aof = bool(int(persistence.get("aof_enabled", 0)))
    checks.append(Check("AOF on", aof, "appendonly yes" if aof else "appendonly no",
                        "set `appendonly yes` in redis.conf (CONFIG SET appendonly yes, then "
                        "CONFIG REWRITE)"))

    waitaof = _waitaof_supported(client)
    fsync = _config_get(client, "appendfsync")
    if fsync is None:
        checks.append(Check(
            "appendfsync always", waitaof,
            "CONFIG is disabled; " + ("WAITAOF confirms each write instead" if waitaof
                                      else "and WAITAOF is missing, so nothing confirms fsync"),
            "allow CONFIG GET for the coordinator's user, or use a server with WAITAOF (7.2+)",
        ))
    else:
        checks.append(Check(
            "appendfsync always", fsync == "always", f"appendfsync {fsync}",
            "set `appendfsync always` in redis.conf (CONFIG SET appendfsync always, then "
            "CONFIG REWRITE): with `everysec` a crash can lose the last second of numbers",
        ))

    role = replication.get("role")
    checks.append(Check("role master", role == "master", f"role {role}",
                        "point the coordinator at the master (or use INVOICE_SYNC_SENTINELS, "
                        "which always finds it)"))

    wanted = int(config.get("DURABLE_REPLICAS") or 0)
    connected = int(replication.get("connected_slaves", 0))
    checks.append(Check(
        "replicas connected", connected >= wanted,
        f"{connected} connected, INVOICE_SYNC_DURABLE_REPLICAS={wanted}",
        f"start {wanted - connected} more replica(s) (`replicaof <master> 6379`) or lower "
        "INVOICE_SYNC_DURABLE_REPLICAS: until then allocations answer 503",
    ))
    if wanted:
        raw = _config_get(client, "min-replicas-to-write")
        value = int(raw) if raw is not None and raw.isdigit() else None
        checks.append(Check(
            "min-replicas-to-write", value is not None and value >= 1,
            f"min-replicas-to-write {raw if raw is not None else 'unknown (CONFIG disabled)'}",
            "set `min-replicas-to-write 1` and `min-replicas-max-lag 10` so a master cut off "
            "from its replicas stops accepting numbers it could lose in a failover",
        ))

    policy = client.info("memory").get("maxmemory_policy") or _config_get(
        client, "maxmemory-policy"
    )
    problem = durability.eviction_problem(policy)
    checks.append(Check("maxmemory-policy noeviction", problem is None,
                        f"maxmemory-policy {policy}", problem and
                        "set `maxmemory-policy noeviction` in redis.conf (CONFIG SET "
                        "maxmemory-policy noeviction, then CONFIG REWRITE)"))

    checks.append(Check("WAITAOF supported", waitaof,
                        "yes" if waitaof else "no (server older than 7.2)",
                        "upgrade to Redis 7.2+ or Valkey 7.2+; until then rely on "
                        "`appendfsync always`"))

    admins = bool(config.get("ADMIN_TOKEN")) or any_admin(client)
    checks.append(Check("admin token", admins,
                        "present" if admins else "no admin token in Redis or the environment",
                        "run `invoice-sync token create-admin` (or start `invoice-sync serve` "
                        "once, which creates one)"))
    return checks


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


def run(
    config: Mapping[str, Any], client_factory: Callable[[Mapping[str, Any]], redis.Redis] | None,
    key_file: Path | None = None,
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
                checks += redis_checks(client, config)
            finally:
                client.close()
    checks.append(secret_key_check(config, key_file))
    return checks


