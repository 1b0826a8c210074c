"""Never number from a store that may be behind reality (lost data, an old backup).

Two facts per sequence, in its guard hash (:func:`coordinator.keys.seq_guard`, in the
sequence's slot), read by ``allocate.lua`` before it takes a new number (replays always answer):

- ``initialised``: the numbering was set explicitly — by the first ``serve`` on a new data
  dir, an admin's PATCH of a sequence, or ``invoice-sync recover`` (a restore brings it back
  with the rest). Where it is missing and no number was ever issued, allocation is refused
  (503): an empty store after data loss would otherwise start again at 1. A store of the
  previous release that has issued numbers counts as initialised (the script records it).
- ``seen:<period>``: the highest number in the sequence's format a sync saw in any WHMCS, and
  where (``<number>|<formatted>|<system>``). While it is above the period's counter, allocation
  in that period is refused (503) until an admin raises ``next_number`` past it: the
  forecaster's syncs are the numbering's safety net.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.numbering.parse import parse
from coordinator.numbering.sequences import CREDIT_NOTE, INVOICE, SEQUENCES, read_settings

INITIALISED = "initialised"
"""Field of the guard hash: when and why the numbering was set explicitly."""


def seen_field(period: str) -> str:
    """Field of the guard hash: the highest number a sync saw in ``period``."""
    return f"seen:{period}"


def is_initialised(client: redis.Redis) -> bool:
    """Whether any sequence's numbering was set explicitly (or has issued numbers)."""
    return any(client.hexists(keys.seq_guard(name), INITIALISED) for name in SEQUENCES) or any(
        client.hexists(keys.seq_stats(name), "issued") for name in SEQUENCES)


def mark_initialised(client: redis.Redis, reason: str) -> None:
    """Record that the numbering was set explicitly (every sequence; kept if already set)."""
    stamp = f"{iso(utcnow())} {reason}"
    for name in SEQUENCES:
        client.hsetnx(keys.seq_guard(name), INITIALISED, stamp)


def numbering_sequences(client: redis.Redis) -> list[tuple[str, dict[str, Any]]]:
    """Return the sequences that number documents now, with their settings."""
    credit_note = read_settings(client, CREDIT_NOTE)
    return [(INVOICE, read_settings(client, INVOICE))] + (
        [(CREDIT_NOTE, credit_note)] if credit_note["dedicated"] else [])


def highest_in_use(
    client: redis.Redis, formatted_numbers: Iterable[str],
) -> dict[tuple[str, str], tuple[int, str]]:
    """Read formatted numbers with the sequences' formats: (sequence, period) -> highest.

    Strings no sequence prints (another numbering scheme, a draft's empty number) are ignored.
    """
    found: dict[tuple[str, str], tuple[int, str]] = {}
    sequences = numbering_sequences(client)
    for text in formatted_numbers:
        for name, settings in sequences:
            parsed = parse(text, settings["format"], settings["padding"], settings["reset"])
            if parsed is None:
                continue
            period, number = parsed
            if number > found.get((name, period), (0, ""))[0]:
                found[(name, period)] = (number, text)
            break
    return found


def record_seen(client: redis.Redis, sequence: str, period: str, number: int, formatted: str,
                system: str) -> None:
    """Raise ``seen:<period>`` of ``sequence`` to ``number`` (never lower it), atomically."""
    guard, field = keys.seq_guard(sequence), seen_field(period)

    def raise_it(pipe: Any) -> None:
        current = pipe.hget(guard, field)
        if current is not None and int(current.split("|", 1)[0]) >= number:
            return
        pipe.multi()
        pipe.hset(guard, field, f"{number}|{formatted}|{system}")

    client.transaction(raise_it, guard)


def counter(client: redis.Redis, sequence: str, period: str) -> int:
    """Return the period's counter (the last number taken; 0 before the first)."""
    return int(client.get(keys.seq_counter(sequence, period)) or 0)


def check_synced_numbers(
    client: redis.Redis, system: str, formatted_numbers: Iterable[str],
) -> list[dict[str, Any]]:
    """Compare the numbers a sync saw in ``system``'s WHMCS with the counters.

    Every (sequence, period) where WHMCS shows a number above the counter is recorded in the
    guard (allocation there is refused until ``next_number`` passes it) and returned.
    """
    ahead = []
    for (sequence, period), (number, text) in sorted(
            highest_in_use(client, formatted_numbers).items()):
        last = counter(client, sequence, period)
        if number > last:
            record_seen(client, sequence, period, number, text, system)
            ahead.append({"sequence": sequence, "period": period, "number": number,
                          "formatted": text, "system": system, "counter": last})
    return ahead


def behind_message(sequence: str, period: str, seen: str) -> str:
    """The refusal's message: which invoice, where, and what the admin does about it."""
    number, formatted, system = (seen.split("|", 2) + ["", ""])[:3]
    return (f"numbering of {sequence} in period {period} is refused: the WHMCS of {system} "
            f"already shows {formatted} (number {number}), above the last number this "
            f"coordinator issued, so its data is behind reality (lost, or an old backup). "
            f"An admin must raise next_number of {sequence} for {period} past {number} "
            "(see docs/RECOVERY.md)")
