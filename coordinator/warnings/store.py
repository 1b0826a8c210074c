"""Store and read warnings (keys in ``coordinator.keys``: ``{warnings}:warning:<id>`` and
``{warnings}:index``, one hash slot).

A warning's id is its deduplication key, ``<type>:<system>`` or ``<type>:<system>:<detail>``:
the same problem raised again bumps ``count`` and ``last_seen`` instead of piling up.

Warnings of the previous release (``warning:<id>``, ``warnings``) are moved to these keys the
first time a process touches warnings (:func:`migrate_legacy`, idempotent).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import redis
from redis.cluster import RedisCluster

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.exceptions import NotFound
from coordinator.lua import LuaScript
from coordinator.ops.redis_client import OncePerClient

SYNC_FAILED = "sync_failed"
MIXED_CURRENCIES = "mixed_currencies"
DUPLICATE_NUMBER = "duplicate_number"
UNKNOWN_NUMBER = "number_not_issued"
MISSING_NUMBER = "issued_number_not_seen"
NUMBERING_BEHIND = "numbering_behind"
"""A WHMCS shows a number above the counter of its period: numbering there is refused."""
INTERNAL_ERROR = "internal_error"
"""A request failed on something broken (a bug, damaged data), answered 500 (``errors.py``)."""
CENTRAL_POLL_FAILED = "central_poll_failed"
"""The coordinator's poll of a system's WHMCS left invoices unnumbered (``central_poll.py``)."""
UNCONFIRMED_NUMBERS = "unconfirmed_numbers"
"""Numbers issued longer than the grace time ago and neither confirmed nor voided, per series
and sequence (the scheduler, ``ops/unconfirmed.py``)."""
TYPES = (SYNC_FAILED, MIXED_CURRENCIES, DUPLICATE_NUMBER, UNKNOWN_NUMBER, MISSING_NUMBER,
         NUMBERING_BEHIND, INTERNAL_ERROR, CENTRAL_POLL_FAILED, UNCONFIRMED_NUMBERS)
"""Warning types the coordinator raises (the gauge shows each, at 0 when none is open)."""


_RAISE = LuaScript.load(__package__, "raise")
_MIGRATE = LuaScript.load(__package__, "migrate")
_INDEX_OPEN = LuaScript.load(__package__, "index_open")

def migrate_legacy(client: redis.Redis) -> int:
    """Move the previous release's warnings to this release's keys; return how many moved.

    Idempotent and safe with several processes at once (one script per warning). A Cluster
    holds no data of the previous release (which did not run on one): nothing to do there.
    """
    if isinstance(client, RedisCluster) or not client.exists(keys.LEGACY_WARNINGS):
        return 0
    moved = 0
    for wid in client.zrange(keys.LEGACY_WARNINGS, 0, -1):
        moved += int(_MIGRATE(client, keys=[keys.legacy_warning(wid), keys.LEGACY_WARNINGS,
                                            keys.warning(wid), keys.WARNINGS], args=[wid]))
    return moved


def index_open(client: redis.Redis) -> int:
    """Fill the per-type sets of unacknowledged warnings with the warnings raised before they
    existed (a store of the previous release); return how many are open. Once per store:
    :data:`keys.WARNINGS_OPEN_INDEXED` marks it done. Idempotent and safe alongside new
    warnings and acknowledgements (one script per warning)."""
    if client.exists(keys.WARNINGS_OPEN_INDEXED):
        return 0
    found = 0
    for wid in client.zrange(keys.WARNINGS, 0, -1):
        kind = wid.split(":", 1)[0]
        found += int(_INDEX_OPEN(client, keys=[keys.warning(wid), keys.warnings_open(kind),
                                               keys.WARNINGS_OPEN_TYPES], args=[wid, kind]))
    client.set(keys.WARNINGS_OPEN_INDEXED, "1")
    return found


def _upgrade(client: redis.Redis) -> None:
    migrate_legacy(client)
    index_open(client)


_migrated = OncePerClient(_upgrade)
"""Return the client, its previous release's warnings moved and indexed first (once per
process)."""


def warning_id(kind: str, system: str | None = None, detail: str | None = None) -> str:
    """Return the deduplication id of a warning."""
    return ":".join(part for part in (kind, system, detail) if part)


def raise_warning(
    client: redis.Redis,
    kind: str,
    message: str,
    *,
    system: str | None = None,
    detail: str | None = None,
    code: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Record a warning (or one more occurrence of it); return its id."""
    now = now or utcnow()
    wid = warning_id(kind, system, detail)
    _RAISE(
        _migrated(client),
        keys=[keys.warning(wid), keys.WARNINGS, keys.warnings_open(kind),
              keys.WARNINGS_OPEN_TYPES],
        args=[wid, kind, system or "", message, code or "",
              iso(now), f"{now.timestamp():.3f}"],
    )
    return wid


def _shape(raw: dict[str, str]) -> dict[str, Any]:
    return {
        "id": raw["id"], "type": raw["type"], "system": raw.get("system") or None,
        "message": raw.get("message", ""), "code": raw.get("code") or None,
        "first_seen": raw.get("first_seen"), "last_seen": raw.get("last_seen"),
        "count": int(raw.get("count", 0)), "acked": raw.get("acked") == "1",
        "acked_at": raw.get("acked_at"),
    }


def get(client: redis.Redis, wid: str) -> dict[str, Any] | None:
    """Return one warning, or None."""
    raw = _migrated(client).hgetall(keys.warning(wid))
    return _shape(raw) if raw else None


def list_warnings(
    client: redis.Redis, since: dt.datetime | None = None, *, include_acked: bool = True,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Return warnings last seen at or after ``since``, most recent first."""
    low = f"{since.timestamp():.3f}" if since else "-inf"
    ids = _migrated(client).zrevrangebyscore(keys.WARNINGS, "+inf", low, start=0, num=limit)
    with client.pipeline(transaction=False) as pipe:
        for wid in ids:
            pipe.hgetall(keys.warning(wid))
        raws = pipe.execute()
    found = [_shape(raw) for raw in raws if raw]
    return [w for w in found if include_acked or not w["acked"]]


def ack(client: redis.Redis, wid: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """Acknowledge a warning (it stays listed; it is unacknowledged again if it recurs).

    Raises:
        NotFound: no such warning.
    """
    now = now or utcnow()
    if not _migrated(client).exists(keys.warning(wid)):
        raise NotFound(f"No warning {wid!r}")
    with client.pipeline(transaction=True) as tx:  # one slot: {warnings}
        tx.hset(keys.warning(wid), mapping={"acked": "1", "acked_at": iso(now)})
        tx.srem(keys.warnings_open(wid.split(":", 1)[0]), wid)
        tx.execute()
    return get(client, wid)


def unacked_by_type(client: redis.Redis) -> Counter[str]:
    """Return the number of unacknowledged warnings per type (for the metrics gauge): one
    SCARD per type, whatever the number of warnings."""
    kinds = sorted(_migrated(client).smembers(keys.WARNINGS_OPEN_TYPES))
    if not kinds:
        return Counter()
    with client.pipeline(transaction=False) as pipe:
        for kind in kinds:
            pipe.scard(keys.warnings_open(kind))
        sizes = pipe.execute()
    return Counter({kind: int(n) for kind, n in zip(kinds, sizes, strict=True) if n})
