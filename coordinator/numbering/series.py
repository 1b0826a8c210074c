"""Series: one legal entity's numbering, and which systems it serves.

A series owns an ``invoice`` and a ``credit_note`` sequence, their ledgers, reference indexes
and the index of every formatted number it issued, all under the hash tag ``{ser:<name>}``.
``default`` always exists (implicitly: it has no record until an admin describes it).

Which series numbers a system's documents is decided in the series' own slot, by its members
hash (``keys.series_members``), because allocation checks it inside the allocation script;
the system's record names its series for routing. A system moves in three steps, each atomic:
``leave`` the old series (refused while it has numbers there), write the record, ``join`` the
new one. A system is open in at most one series at any time; between the steps it is open in
none, and its agents are answered 503 (retry) — never a number from the wrong series.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import redis
from redis.client import NEVER_DECODE

from coordinator import keys
from coordinator.clock import utcnow
from coordinator.exceptions import Conflict, InvalidInput, NotFound
from coordinator.numbering import blocks
from coordinator.numbering.sequences import (
    CREDIT_NOTE,
    DEFAULTS,
    INVOICE,
    SEQUENCES,
    iso,
)

DEFAULT = keys.DEFAULT_SERIES
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""A series name: a slug, safe in keys, URLs and allocation ids (matched in full)."""

DEFAULT_DESCRIPTION = "The default series"
OPEN, CLOSED = "open", "closed"
_RETRIES = 20


def valid_name(name: Any) -> bool:
    """Whether ``name`` is an acceptable series name."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def _transaction(client: redis.Redis, watched: list[str], body: Callable[[Any], None]) -> None:
    """Run ``body(pipe)`` under WATCH ``watched`` (keys of one slot), retrying on changes."""
    for _ in range(_RETRIES):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*watched)
                body(pipe)
                pipe.execute()
                return
            except redis.WatchError:
                continue
    raise Conflict("The series was changed concurrently too often; retry")


def exists(client: redis.Redis, name: str) -> bool:
    """Whether series ``name`` exists (``default`` always does)."""
    return name == DEFAULT or (valid_name(name) and bool(client.exists(keys.series_record(name))))


def require(client: redis.Redis, name: str) -> None:
    """Raise ``NotFound`` unless series ``name`` exists."""
    if not exists(client, name):
        raise NotFound(f"No series {name!r}" if valid_name(name) else "No such series")


def _public(name: str, record: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": record.get("description", DEFAULT_DESCRIPTION if name == DEFAULT else ""),
        "created_at": record.get("created_at"),
        "updated_at": record.get("updated_at"),
    }


def get_series(client: redis.Redis, name: str) -> dict[str, Any]:
    """Return one series (name, description, times).

    Raises:
        NotFound: no such series.
    """
    require(client, name)
    return _public(name, client.hgetall(keys.series_record(name)))


def list_series(client: redis.Redis) -> list[dict[str, Any]]:
    """Return every series, ``default`` first, then by name."""
    names = sorted(set(client.smembers(keys.SERIES)) - {DEFAULT})
    out = [get_series(client, DEFAULT)]
    for name in names:
        record = client.hgetall(keys.series_record(name))
        if record:  # a name whose creation or deletion was interrupted is not a series
            out.append(_public(name, record))
    return out


def create_series(
    client: redis.Redis, name: str, description: str = "", *, now: Callable = utcnow,
) -> dict[str, Any]:
    """Create series ``name`` with both sequences at their default settings.

    Raises:
        InvalidInput: a bad name. Conflict: the series exists.
    """
    if not valid_name(name):
        raise InvalidInput("Validation failed", {"json": {"name": ["Not a valid series name."]}})
    if name == DEFAULT:
        raise Conflict("The series 'default' always exists")
    record_key = keys.series_record(name)
    stamp = iso(now())
    record = {"name": name, "description": description, "created_at": stamp,
              "updated_at": stamp}

    def body(pipe: Any) -> None:
        if pipe.exists(record_key):
            raise Conflict(f"A series named {name!r} already exists")
        pipe.multi()
        pipe.hset(record_key, mapping=record)
        for sequence in SEQUENCES:
            pipe.hset(keys.seq_settings(sequence, name), mapping=DEFAULTS[sequence])

    _transaction(client, [record_key], body)
    client.sadd(keys.SERIES, name)
    return _public(name, record)


def update_series(
    client: redis.Redis, name: str, changes: dict[str, Any], *, now: Callable = utcnow,
) -> dict[str, Any]:
    """Change a series' description; return it.

    Raises:
        NotFound: no such series.
    """
    require(client, name)
    if "description" in changes:
        stamp = iso(now())
        record_key = keys.series_record(name)

        def body(pipe: Any) -> None:
            if name != DEFAULT and not pipe.exists(record_key):
                raise NotFound(f"No series {name!r}")
            created = pipe.hget(record_key, "created_at") or stamp
            pipe.multi()
            pipe.hset(record_key, mapping={"name": name, "description": changes["description"],
                                           "created_at": created, "updated_at": stamp})

        _transaction(client, [record_key], body)
    return get_series(client, name)


def _number_keys(name: str, system: str) -> list[str]:
    """The reference indexes that exist once ``system`` has a number in series ``name``."""
    return [keys.seq_refs(INVOICE, INVOICE, system, name),
            keys.seq_refs(INVOICE, CREDIT_NOTE, system, name),
            keys.seq_refs(CREDIT_NOTE, CREDIT_NOTE, system, name)]


def delete_series(client: redis.Redis, name: str, systems: list[str]) -> None:
    """Delete series ``name`` while no system belongs to it and it issued no number.

    Args:
        systems: Names of registered systems whose record names this series.

    Raises:
        NotFound: no such series. Conflict: ``default``, a system, or a number.
    """
    require(client, name)
    if name == DEFAULT:
        raise Conflict("The series 'default' cannot be deleted")
    if systems:
        raise Conflict(f"Series {name!r} has systems: {', '.join(sorted(systems))}; move or "
                       "delete them first")
    record_key, members_key = keys.series_record(name), keys.series_members(name)
    stats = [keys.seq_stats(sequence, name) for sequence in SEQUENCES]
    periods_keys = [keys.seq_periods(sequence, name) for sequence in SEQUENCES]
    # Its ledger's chain (settings changes, raised next_numbers): watched, so an event appended,
    # sealed or archived meanwhile is deleted too (or refused, once a number is in it).
    chains = [key for sequence in SEQUENCES for key in (
        keys.seq_events(sequence, name), keys.seq_chain(sequence, name),
        keys.seq_archived(sequence, name), keys.seq_checkpoints(sequence, name))]

    def body(pipe: Any) -> None:
        if not pipe.exists(record_key):
            raise NotFound(f"No series {name!r}")
        if OPEN in pipe.hvals(members_key):
            raise Conflict(f"Series {name!r} serves a system; move or delete it first")
        issued = sum(int(pipe.hget(key, "issued") or 0) for key in stats)
        if issued:
            raise Conflict(f"Series {name!r} issued {issued} number(s); a series with numbers "
                           "is kept for its ledger")
        doomed = [record_key, members_key, keys.series_formatted(name), *stats, *periods_keys,
                  *chains]
        for sequence, periods_key in zip(SEQUENCES, periods_keys, strict=True):
            doomed += [keys.seq_settings(sequence, name), keys.seq_audit(sequence, name),
                       keys.seq_guard(sequence, name),  # a series made again starts afresh
                       keys.seq_checkpoint_claim(sequence, name),
                       *_archived_blocks(pipe, sequence, name)]
            for period in pipe.smembers(periods_key):
                doomed += [keys.seq_counter(sequence, period, name),
                           keys.seq_skips(sequence, period, name)]
        pipe.multi()
        pipe.delete(*doomed)

    _transaction(client, [record_key, members_key, *stats, *periods_keys, *chains], body)
    client.srem(keys.SERIES, name)


def _archived_blocks(pipe: Any, sequence: str, name: str) -> list[str]:
    """The keys of the blocks ``numbering.compaction`` archived of ``sequence``'s chain."""
    archived = int(pipe.hget(keys.seq_archived(sequence, name), "events") or 0)
    found, start = [], 0
    while start < archived:
        found.append(keys.seq_block(sequence, start, name))
        raw = pipe.execute_command("GET", found[-1], **{NEVER_DECODE: True})
        start += len(blocks.unpack(start, raw).records)  # a damaged block counts one
    return found


# --- membership -------------------------------------------------------------------------------


def join(client: redis.Redis, name: str, system: str, *, only_if_new: bool = False) -> None:
    """Let series ``name`` number ``system``'s documents (idempotent).

    Args:
        only_if_new: Open only when the series never knew the system (repairs a registration
            or move that stopped before this step); a closed system stays closed.

    Raises:
        NotFound: the series does not exist (any more).
    """
    members_key, record_key = keys.series_members(name), keys.series_record(name)
    if name == DEFAULT and only_if_new:
        return  # unknown systems are open in default already

    def body(pipe: Any) -> None:
        if name != DEFAULT and not pipe.exists(record_key):
            raise NotFound(f"No series {name!r}")
        if only_if_new and pipe.hexists(members_key, system):
            return
        pipe.multi()
        pipe.hset(members_key, system, OPEN)

    _transaction(client, [members_key, record_key], body)


def leave(client: redis.Redis, name: str, system: str, *, keep_numbers: bool = False) -> None:
    """Stop series ``name`` from numbering ``system``'s documents (idempotent).

    Args:
        keep_numbers: Allowed although the system has numbers here (it is being deleted;
            the ledger keeps them). Otherwise a system with numbers cannot leave.

    Raises:
        Conflict: the system has numbers in this series (and ``keep_numbers`` is False).
    """
    members_key = keys.series_members(name)
    number_keys = _number_keys(name, system)

    def body(pipe: Any) -> None:
        if not keep_numbers and pipe.exists(*number_keys):
            raise Conflict(f"System {system!r} has numbers in series {name!r}; a system that "
                           "has numbers cannot move to another series")
        pipe.multi()
        pipe.hset(members_key, system, CLOSED)

    _transaction(client, [members_key, *number_keys], body)


def prepare_registration(client: redis.Redis, name: str, system: str) -> None:
    """Before the record of a new ``system`` of series ``name`` exists: close it in ``default``.

    ``default`` serves systems it never heard of (those of the release before series), so a
    system registered elsewhere must be closed there before anything can name it; :func:`join`
    follows once the record exists. A number that an earlier, deleted system of the same name
    got in ``default`` stays in its ledger.
    """
    if name != DEFAULT:
        leave(client, DEFAULT, system, keep_numbers=True)


def series_of_system(client: redis.Redis, system: str) -> str | None:
    """Return the series the registry names for ``system``; None when it is not registered."""
    from coordinator.systems.migrate import ensure_migrated  # systems imports this module

    name, series = ensure_migrated(client).hmget(keys.system(system), ["name", "series"])
    if name is None:
        return None
    return series or DEFAULT
