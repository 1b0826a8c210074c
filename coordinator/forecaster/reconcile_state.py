"""The reconciliation's findings, kept up to date as syncs and allocations happen.

``reconcile.reconcile`` computes the findings from every stored number and every ledger entry;
this module keeps the same findings in Redis per series (``keys.recon``) and changes them by
what changed, so the report reads a few keys whatever the history (:func:`read`), and writes
nothing.

Two sources feed it, each consumed from where the last update stopped:

* **WHMCS side**: ``upsert.lua`` appends each invoice number whose count it changed to the
  system's ``numbers:changed`` list, in the same atomic step. :func:`refresh` reads those
  numbers' current counts and trims what it applied: a sync costs what it changed.
* **ledger side**: a cursor per series and sequence over the ledger's events
  (``numbering.chain.events_from``). An event naming an allocation (issued, confirmed, voided,
  reissued, recovered) makes the update re-read that entry's current record.

Both apply current values (a count, a record), never differences, so applying a change twice
(after a crash between applying and trimming, or while a build reads) changes nothing.

A change of structure — a system registered, deleted or moved to another series, a system's
first completed sync, a series created or deleted, a ledger shorter than the cursor (a restore)
— rebuilds the whole state once (:func:`rebuild`), as does a store of the previous release
that never had it. Only the worker (after each sync), the scheduler (every tick: ``serve``
runs one) and ``invoice-sync reconcile --rebuild`` update it, one process at a time
(``keys.RECON_LOCK``); a GET never does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.forecaster import defaults, reconcile, store

VERSION = "1"
"""Layout of the state; another value (or none) makes the next update rebuild it."""

SEQUENCES = ("invoice", "credit_note")
"""The ledger's sequences, in the order the report lists their numbers."""

PARTS = ("seen", "entries", "issued", "confirmed", "duplicates", "not_issued", "not_seen", "meta")
"""Every key of one series' state (``keys.recon``)."""

FINDINGS = ("duplicates", "not_issued", "not_seen")


class _Gone(Exception):
    """The update lock was lost (it expired): stop writing; the next update starts over."""


# --- structure -------------------------------------------------------------------------


def structure(client: redis.Redis) -> dict[str, Any]:
    """Return what the state is built for: systems (name, series, in registry order), the
    synced ones and every series (``default`` first)."""
    from coordinator import numbering
    from coordinator.systems import registry

    systems = [[s["name"], s["series"]] for s in registry.list_systems(client)]
    synced = sorted(reconcile.synced_systems(client, [name for name, _ in systems]))
    series = [s["name"] for s in numbering.list_series(client)]
    for _, name in systems:
        if name not in series:
            series.append(name)
    return {"systems": systems, "synced": synced, "series": series}


def _groups(shape: Mapping[str, Any]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {name: [] for name in shape["series"]}
    for system, series in shape["systems"]:
        groups.setdefault(series, []).append(system)
    return groups


def _stored(client: redis.Redis) -> dict[str, str]:
    return client.hgetall(keys.RECON_STATE)


def _shape_of(state: Mapping[str, str]) -> dict[str, Any] | None:
    if state.get("version") != VERSION:
        return None
    return {"systems": json.loads(state["systems"]), "synced": json.loads(state["synced"]),
            "series": json.loads(state["series"])}


# --- applying changes ------------------------------------------------------------------


def _order(sequence: str, period: str, number: str | int) -> str:
    """The sort key of a ledger entry: the order ``reconcile`` meets it (sequence, then
    period as text, then number). ``\\0`` sorts before any character, as a shorter prefix
    does in Python."""
    return f"{SEQUENCES.index(sequence)}\0{period}\0{int(number):020d}"


def _entry(record: Mapping[str, Any] | None) -> list[str] | None:
    """What the state keeps of a ledger entry: [status, system, formatted, order]."""
    if record is None or not record.get("formatted"):
        return None  # lost (a "missing" entry) or never formatted: reconcile skips it too
    from coordinator.numbering import allocation

    _, sequence, period, number = allocation.parse_id(record["id"])
    if sequence not in SEQUENCES:
        return None
    return [record.get("status", ""), record.get("system") or "", record["formatted"],
            _order(sequence, period, number)]


def _member(order: str, formatted: str, system: str, allocation_id: str) -> str:
    return f"{order}\0{json.dumps([formatted, system, allocation_id])}"


def _apply(
    client: redis.Redis, series: str, synced: set[str], *,
    numbers: Mapping[str, Mapping[str, int]] | None = None,
    entries: Mapping[str, Mapping[str, Any] | None] | None = None,
    cursors: Mapping[str, int] | None = None, check: Any = None,
) -> None:
    """Bring ``series``' state in line with current values, in one transaction.

    Args:
        numbers: system -> {invoice number: invoices carrying it now (0: none)}.
        entries: ledger id -> its current record (None: no record).
        cursors: sequence -> the event index the state is now up to date with.
        check: called before writing; raises to stop (the update lock was lost).
    """
    numbers, entries = numbers or {}, entries or {}
    key = lambda part: keys.recon(series, part)  # noqa: E731 - local shorthand
    ids = list(entries)
    olds = client.hmget(key("entries"), ids) if ids else []
    changes: dict[str, tuple[list[str] | None, list[str] | None]] = {}
    touched: set[str] = {number for counts in numbers.values() for number in counts}
    for allocation_id, raw in zip(ids, olds, strict=True):
        old = json.loads(raw) if raw else None
        new = _entry(entries[allocation_id])
        if old != new:
            changes[allocation_id] = (old, new)
            touched.update(e[2] for e in (old, new) if e)
    if not touched and not cursors:
        return
    touched_list = sorted(touched)
    seen_raw = issued_raw = confirmed_raw = []
    if touched_list:
        pipe = client.pipeline(transaction=False)
        for part in ("seen", "issued", "confirmed"):
            pipe.hmget(key(part), touched_list)
        seen_raw, issued_raw, confirmed_raw = pipe.execute()
    seen = {f: json.loads(r) if r else {} for f, r in zip(touched_list, seen_raw, strict=True)}
    issued = {f: int(r or 0) for f, r in zip(touched_list, issued_raw, strict=True)}
    confirmed = {f: json.loads(r) if r else []
                 for f, r in zip(touched_list, confirmed_raw, strict=True)}
    for system, counts in numbers.items():
        for number, n in counts.items():
            if n > 0:
                seen[number][system] = n
            else:
                seen[number].pop(system, None)
    issued_delta, unseen_gone = 0, set()
    for allocation_id, (old, new) in changes.items():
        if old:
            status, system, formatted, order = old
            if status != "void":
                issued[formatted] -= 1
                issued_delta -= 1
            if status == "confirmed":
                confirmed[formatted] = [c for c in confirmed[formatted] if c[1] != allocation_id]
                unseen_gone.add(_member(order, formatted, system, allocation_id))
        if new:
            status, system, formatted, order = new
            if status != "void":
                issued[formatted] += 1
                issued_delta += 1
            if status == "confirmed":
                confirmed[formatted] = sorted([*confirmed[formatted],
                                               [order, allocation_id, system]])
    add: dict[str, dict[str, int]] = {finding: {} for finding in FINDINGS}
    drop: dict[str, set[str]] = {finding: set() for finding in FINDINGS}
    drop["not_seen"] |= unseen_gone
    for number in touched_list:
        where = seen[number]
        flags = {"duplicates": len(where) > 1 or sum(where.values()) > 1,
                 "not_issued": bool(where) and issued[number] <= 0}
        for finding, found in flags.items():
            if found:
                add[finding][number] = 0
            else:
                drop[finding].add(number)
        for order, allocation_id, system in confirmed[number]:
            member = _member(order, number, system, allocation_id)
            if system in synced and not where:
                add["not_seen"][member] = 0
                drop["not_seen"].discard(member)
            else:
                drop["not_seen"].add(member)
    if check is not None:
        check()
    with client.pipeline(transaction=True) as tx:
        for allocation_id, (_, new) in changes.items():
            if new:
                tx.hset(key("entries"), allocation_id, json.dumps(new))
            else:
                tx.hdel(key("entries"), allocation_id)
        _write_hash(tx, key("seen"), {f: json.dumps(w, sort_keys=True) if w else None
                                      for f, w in seen.items()})
        _write_hash(tx, key("issued"), {f: str(n) if n > 0 else None
                                        for f, n in issued.items()})
        _write_hash(tx, key("confirmed"), {f: json.dumps(c) if c else None
                                           for f, c in confirmed.items()})
        for finding in FINDINGS:
            if drop[finding]:
                tx.zrem(key(finding), *drop[finding])
            if add[finding]:
                tx.zadd(key(finding), add[finding])
        if issued_delta:
            tx.hincrby(key("meta"), "numbers_issued", issued_delta)
        if cursors:
            tx.hset(key("meta"), mapping={f"cursor:{seq}": at for seq, at in cursors.items()})
        tx.execute()


def _write_hash(tx: Any, key: str, values: Mapping[str, str | None]) -> None:
    sets = {field: value for field, value in values.items() if value is not None}
    gone = [field for field, value in values.items() if value is None]
    if sets:
        tx.hset(key, mapping=sets)
    if gone:
        tx.hdel(key, *gone)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ledger_records(client: redis.Redis, series: str,
                    ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """Read the current ledger record of each id (None: no such record)."""
    from coordinator.exceptions import NotFound
    from coordinator.numbering import allocation, settled

    wanted = []
    for allocation_id in dict.fromkeys(ids):
        try:
            owner, sequence, period, number = allocation.parse_id(allocation_id)
        except NotFound:
            continue
        if owner == series and sequence in SEQUENCES:
            wanted.append((allocation_id, keys.seq_ledger(sequence, period, series), number))
    pipe = client.pipeline(transaction=False)
    for _, ledger_key, number in wanted:
        pipe.hget(ledger_key, number)
    raws = pipe.execute() if wanted else []
    out = {}
    for (allocation_id, _, number), raw in zip(wanted, raws, strict=True):
        if raw is None:  # settled since (compaction): the same entry, from its block
            _, sequence, period, _ = allocation.parse_id(allocation_id)
            raw = settled.find(client, sequence, period, number, series=series)
        out[allocation_id] = json.loads(raw) if raw else None
    return out


# --- building and updating -------------------------------------------------------------


@contextmanager
def _updating(client: redis.Redis, wait: float | None) -> Iterator[Any]:
    """Hold the update lock (None when another process holds it past ``wait`` seconds)."""
    lock = client.lock(keys.RECON_LOCK, timeout=defaults.RECON_LOCK_SECONDS,
                       blocking=bool(wait), blocking_timeout=wait or None)
    if not lock.acquire():
        yield None
        return
    try:
        yield lock
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # it expired meanwhile: nothing of ours to release


def _keeper(lock: Any):
    def check() -> None:
        try:
            lock.reacquire()
        except redis.exceptions.LockError:
            raise _Gone() from None
    return check


def _build_series(client: redis.Redis, series: str, systems: list[str], synced: set[str],
                  check: Any) -> None:
    from coordinator.numbering import chain, ledger

    client.delete(*(keys.recon(series, part) for part in PARTS))
    # Where the sources stand before reading them: what changes meanwhile is applied again
    # by the next update (current values: harmless when the read saw it already).
    cursors = {seq: chain.event_count(client, seq, series=series) for seq in SEQUENCES}
    backlog = {system: client.llen(keys.sys_numbers_changed(system)) for system in systems}
    for system in systems:
        client.set(keys.sys_recon_tracked(system), "1")
    for system in systems:
        for chunk in _chunks(store.iter_numbers(client, system), defaults.RECON_CHUNK):
            _apply(client, series, synced, numbers={system: dict(chunk)}, check=check)
    for sequence in SEQUENCES:
        entries = ledger.iter_ledger(client, sequence, series=series)
        for chunk in _chunks(entries, defaults.RECON_CHUNK):
            _apply(client, series, synced, entries={e["id"]: e for e in chunk}, check=check)
    _apply(client, series, synced, cursors=cursors, check=check)
    for system, length in backlog.items():
        if length:
            client.ltrim(keys.sys_numbers_changed(system), length, -1)


def rebuild(client: redis.Redis, *, wait: float | None = defaults.RECON_WAIT_SECONDS) -> bool:
    """Build the state from every stored number and ledger entry; return False when another
    process held the update lock past ``wait`` seconds (nothing was done)."""
    with _updating(client, wait) as lock:
        if lock is None:
            return False
        try:
            _rebuild(client, _keeper(lock))
        except _Gone:
            return False
    return True


def _rebuild(client: redis.Redis, check: Any) -> None:
    shape = structure(client)
    old = _shape_of(_stored(client)) or {"series": []}
    client.delete(keys.RECON_STATE)  # unbuilt while it is being built: a GET says so
    for series in old["series"]:
        if series not in shape["series"]:
            client.delete(*(keys.recon(series, part) for part in PARTS))
    synced = set(shape["synced"])
    for series, systems in _groups(shape).items():
        _build_series(client, series, systems, synced, check)
    now = iso(utcnow())
    check()
    client.hset(keys.RECON_STATE, mapping={
        "version": VERSION, "built_at": now, "updated_at": now,
        "systems": json.dumps(shape["systems"]), "synced": json.dumps(shape["synced"]),
        "series": json.dumps(shape["series"])})


def refresh(client: redis.Redis, *, wait: float | None = defaults.RECON_WAIT_SECONDS) -> str:
    """Bring the state up to date: apply what changed since the last update, or build it when
    it was never built or the structure changed. Return ``"updated"``, ``"built"`` or
    ``"busy"`` (another process held the update lock past ``wait`` seconds)."""
    with _updating(client, wait) as lock:
        if lock is None:
            return "busy"
        check = _keeper(lock)
        try:
            state = _stored(client)
            shape = structure(client)
            if _shape_of(state) != shape or _behind(client, shape):
                _rebuild(client, check)
                return "built"
            synced = set(shape["synced"])
            for series, systems in _groups(shape).items():
                for system in systems:
                    _follow_numbers(client, series, system, synced, check)
                _follow_ledger(client, series, synced, check)
            check()
            client.hset(keys.RECON_STATE, "updated_at", iso(utcnow()))
        except _Gone:
            return "busy"
    return "updated"


def _behind(client: redis.Redis, shape: Mapping[str, Any]) -> bool:
    """Whether a ledger has fewer events than the state has consumed (a restored store) or
    archived events it has not (compaction overtook an update that lagged far behind), or a
    system's data was purged since the state took it in (deleted and registered again)."""
    from coordinator.numbering import chain

    names = [name for name, _ in shape["systems"]]
    if names and client.exists(*(keys.sys_recon_tracked(name) for name in names)) < len(names):
        return True
    for series in shape["series"]:
        meta = client.hgetall(keys.recon(series, "meta"))
        for sequence in SEQUENCES:
            cursor = int(meta.get(f"cursor:{sequence}", 0))
            if not chain.first_listed(client, sequence, series=series) <= cursor <= (
                    chain.event_count(client, sequence, series=series)):
                return True
    return False


def _follow_numbers(client: redis.Redis, series: str, system: str, synced: set[str],
                    check: Any) -> None:
    changed_key = keys.sys_numbers_changed(system)
    while True:
        changed = client.lrange(changed_key, 0, defaults.RECON_CHUNK - 1)
        if not changed:
            return
        wanted = sorted(set(changed))
        counts = client.hmget(keys.sys_numbers(system), wanted)
        _apply(client, series, synced, check=check,
               numbers={system: {n: int(c or 0) for n, c in zip(wanted, counts, strict=True)}})
        client.ltrim(changed_key, len(changed), -1)


def _follow_ledger(client: redis.Redis, series: str, synced: set[str], check: Any) -> None:
    from coordinator.numbering import chain

    meta = client.hgetall(keys.recon(series, "meta"))
    for sequence in SEQUENCES:
        cursor = int(meta.get(f"cursor:{sequence}", 0))
        while True:
            events = chain.events_from(client, sequence, cursor, defaults.RECON_CHUNK,
                                       series=series)
            if not events:
                break
            cursor += len(events)
            ids = [e["id"] for _, e in events if e and isinstance(e.get("id"), str)]
            _apply(client, series, synced, entries=_ledger_records(client, series, ids),
                   cursors={sequence: cursor}, check=check)


# --- reading ---------------------------------------------------------------------------


def read(client: redis.Redis, limit: int = 1000) -> dict[str, Any] | None:
    """Return the report as ``reconcile.reconcile`` would compute it at the last update, or
    None when the state was never built. A fixed number of round trips and commands per series,
    whatever the numbers; writes nothing."""
    state = _stored(client)
    shape = _shape_of(state)
    if shape is None:
        return None
    groups = _groups(shape)
    pipe = client.pipeline(transaction=False)
    for series in shape["series"]:
        key = lambda part, s=series: keys.recon(s, part)  # noqa: E731
        pipe.hget(key("meta"), "numbers_issued")
        pipe.hlen(key("seen"))
        pipe.hlen(key("entries"))
        for finding in FINDINGS:
            pipe.zcard(key(finding))
            pipe.zrange(key(finding), 0, limit - 1)
    replies = iter(pipe.execute())
    found: dict[str, dict[str, Any]] = {}
    for series in shape["series"]:
        issued, seen, entries = int(next(replies) or 0), next(replies), next(replies)
        part = {"issued": issued, "seen": seen, "entries": entries}
        for finding in FINDINGS:
            part[f"n_{finding}"], part[finding] = next(replies), next(replies)
        found[series] = part
    pipe = client.pipeline(transaction=False)
    for series, part in found.items():
        part["listed"] = sorted(set(part["duplicates"]) | set(part["not_issued"]))
        part["where"] = {}
        if part["listed"]:
            pipe.hmget(keys.recon(series, "seen"), part["listed"])
    replies = iter(pipe.execute())
    for part in found.values():
        if part["listed"]:
            part["where"] = dict(zip(part["listed"], (json.loads(r) for r in next(replies)),
                                     strict=True))
    present = [s for s in found if groups.get(s) or found[s]["entries"]]
    order = sorted(present, key=lambda name: (name != reconcile.DEFAULT_SERIES, name))
    by_series = {series: _series_report(groups.get(series, []), found[series])
                 for series in order}
    counts = {key: sum(part["counts"][key] for part in by_series.values())
              for key in ("numbers_seen", "numbers_issued", *FINDINGS)}
    return {
        "checked_at": state["updated_at"],
        "systems": [name for name, _ in shape["systems"]],
        "systems_synced": shape["synced"],
        "ledger_compared": True,
        "counts": counts,
        **{finding: [item for part in by_series.values() for item in part[finding]][:limit]
           for finding in FINDINGS},
        "by_series": by_series,
    }


def _series_report(systems: list[str], part: Mapping[str, Any]) -> dict[str, Any]:
    where = part["where"]
    not_seen = []
    for member in part["not_seen"]:
        formatted, system, allocation_id = json.loads(member.split("\0", 3)[3])
        not_seen.append({"number": formatted, "system": system, "allocation": allocation_id})
    return {
        "systems": list(systems),
        "counts": {"numbers_seen": part["seen"], "numbers_issued": part["issued"],
                   "duplicates": part["n_duplicates"], "not_issued": part["n_not_issued"],
                   "not_seen": part["n_not_seen"]},
        "duplicates": [{"number": number, "systems": [{"system": s, "invoices": n}
                                                      for s, n in sorted(where[number].items())]}
                       for number in part["duplicates"]],
        "not_issued": [{"number": number, "systems": sorted(where[number])}
                       for number in part["not_issued"]],
        "not_seen": not_seen,
    }


def compare(kept: Mapping[str, Any], full: Mapping[str, Any]) -> list[str]:
    """Name each part of the report where the kept findings differ from a full computation
    (``checked_at`` aside: the two were computed at different times)."""
    out = []
    for key in sorted(set(kept) | set(full)):
        if key == "checked_at":
            continue
        if key == "by_series" and isinstance(kept.get(key), dict) and isinstance(
                full.get(key), dict):
            for series in sorted(set(kept[key]) | set(full[key])):
                if kept[key].get(series) != full[key].get(series):
                    out.append(f"by_series.{series}")
        elif kept.get(key) != full.get(key):
            out.append(key)
    return out
