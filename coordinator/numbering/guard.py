"""Never number from a store that may be behind reality (lost data, an old backup).

Facts per series and sequence, in its guard hash (:func:`coordinator.keys.seq_guard`, in the
series' slot), read by ``allocate.lua`` before it takes a new number (replays always answer):

- ``initialised``: the series' numbering was set explicitly — by the first ``serve`` on a new
  data dir, an admin's PATCH of a sequence, or ``invoice-sync recover``. Where it is missing,
  allocation is refused (503): an empty store after data loss would otherwise start again at 1.
  Data of the previous release (no guard yet) is adopted on its first refusal (:func:`adopt`):
  a series that issued numbers, has a counter or whose settings an admin changed counts as
  initialised, and so does a new series in a store where another series is.
- ``restored``: written by ``invoice-sync restore`` (which removes ``initialised``): the store
  is a backup, and numbers issued after it was taken may be printed in some WHMCS. It numbers
  again after ``invoice-sync recover`` compared it with them (or an admin set the sequences).
- ``seen:<period>``: the highest number in the sequence's format a sync saw in any WHMCS of
  the series, and where (``<number>|<formatted>|<system>``). While it is above the period's
  counter, allocation in that period is refused (503) until an admin raises ``next_number``
  past it (or ``recover`` does): the forecaster's syncs are the numbering's safety net.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.numbering.parse import parse
from coordinator.numbering.sequences import (
    CREDIT_NOTE,
    DEFAULT_SERIES,
    INVOICE,
    SEQUENCES,
    read_settings,
)

INITIALISED = "initialised"
"""Field of the guard hash: when and why the numbering was set explicitly."""

RESTORED = "restored"
"""Field of the guard hash: the backup a restore loaded (until ``recover`` or an admin's set)."""

RECOVERING = "recovering"
"""Field of the guard hash: a ``recover`` began writing into a series not initialised and has
not finished (until it does, or an admin's set): its entries are no previous release's data."""


def seen_field(period: str) -> str:
    """Field of the guard hash: the highest number a sync saw in ``period``."""
    return f"seen:{period}"


def all_series(client: redis.Redis) -> list[str]:
    """Return ``default`` and every created series."""
    return [DEFAULT_SERIES, *sorted(set(client.smembers(keys.SERIES)) - {DEFAULT_SERIES})]


def is_initialised(client: redis.Redis, series: str) -> bool:
    """Whether ``series`` has its numbering set explicitly."""
    return any(client.hexists(keys.seq_guard(seq, series), INITIALISED) for seq in SEQUENCES)


def _mark(client: redis.Redis, series: str, field: str) -> str | None:
    """Return the first value of ``field`` in the guard hashes of ``series``, or None."""
    for seq in SEQUENCES:
        value = client.hget(keys.seq_guard(seq, series), field)
        if value:
            return value
    return None


def restored_from(client: redis.Redis, series: str) -> str | None:
    """Return the ``restored`` record of ``series`` (which backup), or None."""
    return _mark(client, series, RESTORED)


def recovering(client: redis.Redis, series: str) -> str | None:
    """Return the ``recovering`` record of ``series`` (when, by whom), or None."""
    return _mark(client, series, RECOVERING)


def mark_recovering(client: redis.Redis, reason: str, series: str) -> None:
    """Record, before ``recover`` writes into ``series`` (not initialised), that it began: if
    it stops half-way, the entries it wrote do not get the series adopted."""
    stamp = f"{iso(utcnow())} {reason}"
    with client.pipeline(transaction=True) as pipe:  # one slot: the series'
        for seq in SEQUENCES:
            pipe.hset(keys.seq_guard(seq, series), RECOVERING, stamp)
        pipe.execute()


def mark_initialised(client: redis.Redis, reason: str, series: str | None = None) -> None:
    """Record that the numbering was set explicitly (every sequence of ``series``, None: of
    every series); the first record is kept. Clears a restore's ``restored`` mark and an
    unfinished ``recover``'s ``recovering`` mark."""
    stamp = f"{iso(utcnow())} {reason}"
    for name in all_series(client) if series is None else [series]:
        with client.pipeline(transaction=True) as pipe:  # one slot: the series'
            for seq in SEQUENCES:
                pipe.hsetnx(keys.seq_guard(seq, name), INITIALISED, stamp)
                pipe.hdel(keys.seq_guard(seq, name), RESTORED, RECOVERING)
            pipe.execute()


def queue_restored(pipe: Any, tag: bytes | str, backup: str) -> list[str]:
    """Queue, into a restore's transaction of the unit with hash tag ``tag``, what makes a
    series wait for ``recover`` (or an admin) before numbering; return the keys it writes.

    Units of other tags (systems, auth, warnings) get nothing.
    """
    tag = tag.decode() if isinstance(tag, bytes) else tag
    prefix = keys.series_tag("")[1:-1]  # "ser:"
    if not tag.startswith(prefix):
        return []
    series = tag[len(prefix):]
    written = [keys.seq_guard(seq, series) for seq in SEQUENCES]
    for key in written:
        pipe.hdel(key, INITIALISED)
        pipe.hset(key, RESTORED, backup)
    return written


def _has_history(client: redis.Redis, series: str) -> bool:
    """Whether ``series`` issued numbers, has a counter, or was set by an admin."""
    pipe = client.pipeline(transaction=False)
    for seq in SEQUENCES:
        pipe.hget(keys.seq_stats(seq, series), "issued")
        pipe.scard(keys.seq_periods(seq, series))
        pipe.llen(keys.seq_audit(seq, series))
    return any(int(value or 0) > 0 for value in pipe.execute())


def adopt(client: redis.Redis, series: str) -> bool:
    """Initialise ``series`` if the store shows it was never lost; return whether it did.

    For data of the previous release (no guard yet) and series created in a live store. A
    restored series, or one an unfinished ``recover`` wrote into, is never adopted: it waits
    for ``recover``.
    """
    if restored_from(client, series) or recovering(client, series):
        return False
    if _has_history(client, series):
        mark_initialised(client, "numbering of the previous release (issued or set)", series)
        return True
    if any(is_initialised(client, other) for other in all_series(client) if other != series):
        mark_initialised(client, "new series in an initialised store", series)
        return True
    return False


def adopt_all(client: redis.Redis) -> list[str]:
    """Run :func:`adopt` on every series not initialised; return those still refusing.

    Twice: a series without history is adopted when any other series is, whatever the order.
    """
    for _ in range(2):
        waiting = [name for name in all_series(client)
                   if not is_initialised(client, name) and not adopt(client, name)]
    return waiting


def not_initialised_message(client: redis.Redis, series: str) -> str:
    """The refusal's message: why the series does not number, and what the admin does."""
    restored = restored_from(client, series)
    if restored:
        return (f"numbering of series {series} waits after a restore ({restored}): numbers "
                "issued after the backup was taken may already be printed in WHMCS. Run "
                "`invoice-sync recover` (it reads every system's WHMCS and raises the counters "
                "past what it finds), or set next_number of the sequences "
                "(PATCH /v1/sequences/{name}); see docs/RECOVERY.md")
    unfinished = recovering(client, series)
    if unfinished:
        return (f"numbering of series {series} waits for `invoice-sync recover`, which stopped "
                f"before it finished ({unfinished}): run it again (it keeps what it wrote and "
                "raises the counters it did not reach); see docs/RECOVERY.md")
    return (f"numbering of series {series} is not initialised: this store never issued a "
            "number there and its sequences were never set explicitly, so it may have lost "
            "its data. Restore a backup, run `invoice-sync recover`, or set next_number of the "
            "sequences (PATCH /v1/sequences/{name}); see docs/RECOVERY.md")


def numbering_sequences(
    client: redis.Redis, series: str = DEFAULT_SERIES,
) -> list[tuple[str, dict[str, Any]]]:
    """Return the sequences of ``series`` that number documents now, with their settings."""
    credit_note = read_settings(client, CREDIT_NOTE, series)
    return [(INVOICE, read_settings(client, INVOICE, series))] + (
        [(CREDIT_NOTE, credit_note)] if credit_note["dedicated"] else [])


def read_number(
    sequences: list[tuple[str, dict[str, Any]]], text: str,
) -> tuple[str, str, int] | None:
    """Return ``(sequence, period, number)`` of a formatted number, or None if no sequence
    of the list prints it."""
    for name, settings in sequences:
        parsed = parse(text, settings["format"], settings["padding"], settings["reset"])
        if parsed is not None:
            return name, parsed[0], parsed[1]
    return None


def highest_in_use(
    client: redis.Redis, formatted_numbers: Iterable[str], series: str = DEFAULT_SERIES,
) -> dict[tuple[str, str], tuple[int, str]]:
    """Read formatted numbers with the series' formats: (sequence, period) -> highest.

    Strings no sequence prints (another numbering scheme, a draft's empty number) are ignored.
    """
    found: dict[tuple[str, str], tuple[int, str]] = {}
    sequences = numbering_sequences(client, series)
    for text in formatted_numbers:
        parsed = read_number(sequences, text)
        if parsed is None:
            continue
        name, period, number = parsed
        if number > found.get((name, period), (0, ""))[0]:
            found[(name, period)] = (number, text)
    return found


def record_seen(client: redis.Redis, sequence: str, period: str, number: int, formatted: str,
                system: str, series: str = DEFAULT_SERIES) -> None:
    """Raise ``seen:<period>`` of ``sequence`` to ``number`` (never lower it), atomically."""
    guard, field = keys.seq_guard(sequence, series), seen_field(period)

    def raise_it(pipe: Any) -> None:
        current = pipe.hget(guard, field)
        if current is not None and int(current.split("|", 1)[0]) >= number:
            return
        pipe.multi()
        pipe.hset(guard, field, f"{number}|{formatted}|{system}")

    client.transaction(raise_it, guard)


def counter(client: redis.Redis, sequence: str, period: str,
            series: str = DEFAULT_SERIES) -> int:
    """Return the period's counter (the last number taken; 0 before the first)."""
    return int(client.get(keys.seq_counter(sequence, period, series)) or 0)


def check_synced_numbers(
    client: redis.Redis, system: str, formatted_numbers: Iterable[str],
    series: str = DEFAULT_SERIES,
) -> list[dict[str, Any]]:
    """Compare the numbers a sync saw in ``system``'s WHMCS with the counters of its series.

    Every (sequence, period) where WHMCS shows a number above the counter is recorded in the
    guard (allocation there is refused until ``next_number`` passes it) and returned.
    """
    ahead = []
    for (sequence, period), (number, text) in sorted(
            highest_in_use(client, formatted_numbers, series).items()):
        last = counter(client, sequence, period, series)
        if number > last:
            record_seen(client, sequence, period, number, text, system, series)
            ahead.append({"series": series, "sequence": sequence, "period": period,
                          "number": number, "formatted": text, "system": system,
                          "counter": last})
    return ahead


def behind_message(series: str, sequence: str, period: str, seen: str) -> str:
    """The refusal's message: which invoice, where, and what the admin does about it."""
    # ``<number>|<formatted>|<system>``: a format may contain "|", a system name cannot.
    number, _, rest = seen.partition("|")
    formatted, _, system = rest.rpartition("|")
    where = "" if series == DEFAULT_SERIES else f" of series {series}"
    return (f"numbering of {sequence}{where} in period {period} is refused: the WHMCS of "
            f"{system} already shows {formatted} (number {number}), above the last number this "
            f"coordinator issued, so its data is behind reality (lost, or an old backup). "
            f"Run `invoice-sync recover`, or an admin raises next_number of {sequence} for "
            f"{period} past {number} (see docs/RECOVERY.md)")
