"""Take a consistent snapshot of a running store, and load one into an empty store.

Layout-agnostic on purpose: every key is saved with DUMP and PTTL, whatever it holds, so a key
another module adds tomorrow is backed up without a change here.

Consistency without stopping the coordinator: keys are grouped by their Redis Cluster hash tag
(``{seq:invoice}``, ``{sys:blue}``, ``{auth}``; a key without a tag is its own unit). Every write
the coordinator makes is one script or transaction on one hash tag, so a unit is what one write
can change. Each unit is read by one Lua script (``dump_unit.lua``: DUMP and PTTL of each of
its keys), which runs atomically, so no write lands in the middle of it and a busy unit is never
starved. A unit's key that appeared after the listing is caught by a second listing after all
units were read, and that unit is read again (a key gone meanwhile: the unit is listed again).
So every unit is exactly its state at one moment (its script);
different units are taken at different moments within the backup's run (the window).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from coordinator import keys
from coordinator.exceptions import BackupRefused
from coordinator.lua import LuaScript

PAYLOAD_REFUSED = "DUMP payload version or checksum are wrong"
"""RESTORE's error (Redis and Valkey) for a payload of a newer RDB version (or a corrupt one)."""

MAX_ROUNDS = 50
"""How often a unit is re-read (keys kept appearing or vanishing) before the backup gives up."""


def hash_tag(key: bytes) -> bytes:
    """Return the part of ``key`` Redis Cluster hashes: its ``{tag}`` if any, else the key."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def _excluded(key: bytes) -> bool:
    return any(key.startswith(prefix.encode()) for prefix in keys.BACKUP_EXCLUDED_PREFIXES)


def list_units(client: redis.Redis) -> dict[bytes, set[bytes]]:
    """SCAN every key (but the excluded counters) and group them by hash tag."""
    units: dict[bytes, set[bytes]] = {}
    for key in client.scan_iter(count=1000):
        if not _excluded(key):
            units.setdefault(hash_tag(key), set()).add(key)
    return units


DUMP_UNIT = LuaScript.load(__package__, "dump_unit")
"""DUMP and PTTL of one unit's keys, at one instant."""


def _read_unit(client: redis.Redis, names: set[bytes]) -> list[tuple[bytes, int, bytes]] | None:
    """DUMP and PTTL ``names`` in one script (one instant); None when one of them is gone."""
    ordered = sorted(names)
    replies = DUMP_UNIT(client, keys=ordered)
    entries = []
    for index, name in enumerate(ordered):
        payload, ttl = replies[2 * index], replies[2 * index + 1]
        if payload is None:  # deleted between the listing and the read: list again
            return None
        entries.append((name, int(ttl), payload))
    return entries


def take(client: redis.Redis, *, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Return a snapshot ``{"units": [...], "started_at", "finished_at"}`` of a running store.

    ``client`` must not decode responses (DUMP payloads are bytes).

    Raises:
        BackupRefused: a unit kept changing for :data:`MAX_ROUNDS` rounds.
    """
    started = clock()
    taken: dict[bytes, dict[str, Any]] = {}
    pending = list_units(client)
    for _round in range(MAX_ROUNDS):
        for tag, names in sorted(pending.items()):
            entries = _read_unit(client, names)
            attempts = 1
            while entries is None:
                if attempts >= MAX_ROUNDS:
                    raise BackupRefused(
                        f"the store kept changing: a unit could not be read consistently in "
                        f"{MAX_ROUNDS} attempts; try again at a quieter moment"
                    )
                names = list_units_of(client, tag)
                entries = _read_unit(client, names) if names else []
                attempts += 1
            taken[tag] = {"taken_at": clock(), "keys": entries, "names": names}
        # A key created in a unit after its listing: read that unit again, with it.
        pending = {}
        for tag, names in list_units(client).items():
            if tag not in taken or not names <= taken[tag]["names"]:
                pending[tag] = names | (taken[tag]["names"] if tag in taken else set())
        if not pending:
            break
    else:
        raise BackupRefused(
            f"the store kept changing: {len(pending)} unit(s) could not be read consistently "
            f"in {MAX_ROUNDS} rounds; try again at a quieter moment"
        )
    units = [
        {"tag": _b64(tag), "taken_at": unit["taken_at"],
         "keys": [[_b64(name), ttl, _b64(payload)] for name, ttl, payload in unit["keys"]]}
        for tag, unit in sorted(taken.items()) if unit["keys"]
    ]
    return {"started_at": started, "finished_at": clock(), "units": units}


def list_units_of(client: redis.Redis, tag: bytes) -> set[bytes]:
    """Return the current keys of one unit (a key with no tag is a unit of itself)."""
    return list_units(client).get(tag, set())


def is_empty(client: redis.Redis) -> bool:
    """Whether the store holds no key at all."""
    return client.dbsize() == 0


def restore(
    client: redis.Redis, units: Iterable[dict[str, Any]],
    also: Callable[[Any, bytes], list[str]] | None = None,
) -> int:
    """Load snapshot units into an EMPTY store, one transaction per unit; return the key count.

    Keys whose TTL ran out since the backup are not restored (they would have expired).
    ``also(pipe, tag)`` queues more commands into a unit's transaction (same slot) and returns
    the keys they write: the numbering guard marks a series restored in the very step that
    loads it, so even a restore that stops half-way never leaves a series that numbers from
    the backup.

    Raises:
        BackupRefused: the store is not empty, or the server cannot read the DUMP payloads
            (an older server than the one backed up); in both cases nothing was written.
    """
    if not is_empty(client):
        raise BackupRefused(
            f"the store is not empty ({client.dbsize()} keys): restore only loads into an "
            "empty store, so it can never mix a backup with newer numbers; nothing was changed"
        )
    count = 0
    first = True
    for unit in units:
        with client.pipeline(transaction=True) as pipe:
            for name, ttl, payload in unit["keys"]:
                if ttl == -2:
                    continue
                pipe.restore(_unb64(name), max(ttl, 0), _unb64(payload))
                count += 1
            added = also(pipe, _unb64(unit["tag"])) if also is not None else []
            replies = pipe.execute(raise_on_error=False)
        errors = [reply for reply in replies if isinstance(reply, redis.ResponseError)]
        if errors:
            # Every payload of one backup has the same RDB version, so the first unit
            # fails as a whole and nothing was written.
            if first and all(str(e).removeprefix("ERR ") == PAYLOAD_REFUSED for e in errors):
                # A transaction does not roll back: what ``also`` wrote besides goes again.
                if added:
                    client.delete(*added)
                raise BackupRefused(
                    "this server cannot read the backup's DUMP payloads (its RDB version "
                    "is older than the backed-up server's); restore into the same or a "
                    "newer server version; nothing was changed"
                )
            raise errors[0]
        first = False
    return count


def rdb_version(payload: bytes) -> int:
    """Return the RDB version a DUMP payload was written in (its last 10 bytes: 2 + CRC64)."""
    return int.from_bytes(payload[-10:-8], "little")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
