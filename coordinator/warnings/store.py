"""Store and read warnings (keys in ``coordinator.keys``: ``warning:<id>`` and ``warnings``).

A warning's id is its deduplication key, ``<type>:<system>`` or ``<type>:<system>:<detail>``:
the same problem raised again bumps ``count`` and ``last_seen`` instead of piling up.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.exceptions import NotFound
from coordinator.lua import LuaScript

SYNC_FAILED = "sync_failed"
MIXED_CURRENCIES = "mixed_currencies"
DUPLICATE_NUMBER = "duplicate_number"
UNKNOWN_NUMBER = "number_not_issued"
MISSING_NUMBER = "issued_number_not_seen"
NUMBERING_BEHIND = "numbering_behind"
"""A WHMCS shows a number above the counter of its period: numbering there is refused."""
INTERNAL_ERROR = "internal_error"
"""A request failed on something broken (a bug, damaged data), answered 500 (``errors.py``)."""
TYPES = (SYNC_FAILED, MIXED_CURRENCIES, DUPLICATE_NUMBER, UNKNOWN_NUMBER, MISSING_NUMBER,
         NUMBERING_BEHIND, INTERNAL_ERROR)
"""Warning types the coordinator raises (the gauge shows each, at 0 when none is open)."""


_RAISE = LuaScript.load(__package__, "raise")


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
        client,
        keys=[keys.warning(wid), keys.WARNINGS],
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
    raw = client.hgetall(keys.warning(wid))
    return _shape(raw) if raw else None


def list_warnings(
    client: redis.Redis, since: dt.datetime | None = None, *, include_acked: bool = True,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Return warnings last seen at or after ``since``, most recent first."""
    low = f"{since.timestamp():.3f}" if since else "-inf"
    ids = client.zrevrangebyscore(keys.WARNINGS, "+inf", low, start=0, num=limit)
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
    if not client.exists(keys.warning(wid)):
        raise NotFound(f"No warning {wid!r}")
    client.hset(keys.warning(wid), mapping={"acked": "1", "acked_at": iso(now)})
    return get(client, wid)


def unacked_by_type(client: redis.Redis) -> Counter[str]:
    """Return the number of unacknowledged warnings per type (for the metrics gauge)."""
    counts: Counter[str] = Counter()
    for warning in list_warnings(client, include_acked=False, limit=100_000):
        counts[warning["type"]] += 1
    return counts
