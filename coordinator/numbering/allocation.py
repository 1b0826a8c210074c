"""Take numbers, confirm them, void them: the allocation hot path and the status changes.

An allocation is one Lua script (``allocate.lua``) plus ``WAITAOF`` in one round trip. The
sequence that numbers credit notes is guessed from the last answer (a process-wide hint); the
script checks the guess atomically against the routing flag stored in its own slot and
answers ``moved`` when wrong, so a stale guess costs one more round trip, never a number.
The sequence's reset (which picks the period, hence the keys) is a hint checked the same way.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.exceptions import (
    Conflict,
    Forbidden,
    InternalFault,
    NotFound,
    NumberingBehind,
    NumberingNotInitialised,
    ServiceUnavailable,
)
from coordinator.numbering import guard, scripts
from coordinator.numbering.scripts import Durability
from coordinator.numbering.sequences import (
    CREDIT_NOTE,
    DEFAULTS,
    INVOICE,
    MAX_NUMBER,
    ensure_sequences,
    period_of,
)

_credit_note_home = {"sequence": CREDIT_NOTE}
"""Where credit notes were numbered last time; only a hint (see the module docstring)."""

_reset_hint: dict[str, str] = {}
"""The reset each sequence had last time (a hint checked by the script, like the above)."""

_ID = re.compile(r"^(invoice|credit_note):(all|\d{4}|\d{4}-\d{2}):([1-9]\d{0,14})$")


def entry_out(raw: str) -> dict[str, Any]:
    """Turn a stored ledger entry into the API's allocation object (numbers as integers)."""
    entry = json.loads(raw)
    entry["number"] = int(entry["number"])
    entry.pop("previous", None)
    return entry


def parse_id(allocation_id: str) -> tuple[str, str, str]:
    """Split ``invoice:2026:51`` into sequence, period and number; 404 when malformed."""
    match = _ID.match(allocation_id)
    if not match:
        raise NotFound(f"No allocation {allocation_id!r}")
    return match.group(1), match.group(2), match.group(3)


def allocate(
    client: redis.Redis,
    system: str,
    document: str,
    reference: str,
    day: date,
    durability: Durability | None = None,
) -> tuple[dict[str, Any], bool]:
    """Number one WHMCS document, or return the number it already has.

    Args:
        client: Redis client.
        system: The system the document belongs to (from the agent's token).
        document: ``invoice`` or ``credit_note``.
        reference: The document's id in that WHMCS (validated by the caller).
        day: The document date; it picks the period.
        durability: Wait for fsync/replicas before returning (None: do not wait).

    Returns:
        The allocation and whether it is new (False: a replay of an earlier allocation).

    Raises:
        Conflict: the reference was numbered in another period, or the sequence is exhausted.
        NotDurable: the write was not confirmed durable in time (retry the same call).
    """
    sequence = INVOICE if document == INVOICE else _credit_note_home["sequence"]
    now = iso(utcnow())
    tried: set[str] = set()
    while True:
        reset = _reset_hint.get(sequence, DEFAULTS[sequence]["reset"])
        period = period_of(day, reset)
        seq_keys = [
            keys.seq_settings(sequence), keys.seq_stats(sequence),
            keys.seq_refs(sequence, document, system), keys.seq_periods(sequence),
            keys.seq_counter(sequence, period), keys.seq_ledger(sequence, period),
            keys.seq_ledger_order(sequence, period), keys.seq_guard(sequence),
        ]
        args = [document, system, reference, day.isoformat(), period, reset, now, MAX_NUMBER]
        reply, wait = scripts.run(
            client, scripts.ALLOCATE, seq_keys, [*args, sequence], durability
        )
        kind = reply[0]
        if kind == "replay" and reply[1] is None:
            # The reference index names a ledger entry that is not there: damaged data that
            # no retry repairs (and numbering it anew could print a number twice).
            raise InternalFault(
                f"the reference index of system {system!r} says {document} {reference!r} "
                f"was numbered in {sequence} period {period}, but that ledger entry is "
                "missing; no new number was taken")
        if kind in ("new", "replay"):
            if document == CREDIT_NOTE:
                _credit_note_home["sequence"] = sequence
            if durability is not None:
                scripts.check_durable(wait, durability)
            return entry_out(reply[1]), kind == "new"
        code = reply[1]
        if code == "uninitialized" and "init" not in tried:
            tried.add("init")
            ensure_sequences(client)
        elif code == "reset" and f"reset:{sequence}" not in tried:
            tried.add(f"reset:{sequence}")
            _reset_hint[sequence] = reply[2]
        elif code == "moved" and sequence not in tried:
            tried.add(sequence)
            sequence = INVOICE if sequence == CREDIT_NOTE else CREDIT_NOTE
        elif code == "moved":
            raise ServiceUnavailable(
                "Credit-note numbering is being switched between sequences; retry shortly")
        elif code == "not_initialised" and "initialised" not in tried and (
                guard.is_initialised(client)):
            # Another sequence of this store was set explicitly or issued numbers: the store
            # is not a lost one, so this sequence is initialised too.
            tried.add("initialised")
            guard.mark_initialised(client, "another sequence of the store was")
        elif code == "not_initialised":
            raise NumberingNotInitialised(
                "numbering is not initialised: this store never issued a number and its "
                "sequences were never set explicitly, so it may have lost its data. Restore a "
                "backup, run `invoice-sync recover`, or set next_number of the sequences "
                "(PATCH /v1/sequences/{name}); see docs/RECOVERY.md")
        elif code == "behind":
            raise NumberingBehind(guard.behind_message(sequence, period, reply[2]))
        elif code == "period":
            raise Conflict(
                f"Reference {reference!r} already has number {reply[2]}, in another period "
                f"than the date {day.isoformat()} falls in", {"json": {"date": [
                    "Does not match the period of the existing allocation."]}})
        elif code == "exhausted":
            raise Conflict(
                f"sequence exhausted: {sequence} cannot issue a number after {reply[2]} "
                f"within its padding (or the cap {MAX_NUMBER}); raise the padding or "
                "change the format's period")
        else:
            raise ServiceUnavailable(f"Sequence {sequence} is not initialised; retry")


def get(client: redis.Redis, allocation_id: str) -> dict[str, Any]:
    """Return one allocation by id, or raise ``NotFound``."""
    sequence, period, number = parse_id(allocation_id)
    raw = client.hget(keys.seq_ledger(sequence, period), number)
    if raw is None:
        raise NotFound(f"No allocation {allocation_id!r}")
    return entry_out(raw)


def transition(
    client: redis.Redis,
    allocation_id: str,
    action: str,
    value: str,
    *,
    actor_kind: str,
    actor_system: str | None,
    actor: str,
    durability: Durability | None = None,
) -> tuple[dict[str, Any], bool]:
    """Confirm (``value`` = invoicenum) or void (``value`` = reason) one allocation.

    Idempotent: repeating a done change returns the entry unchanged. An agent may act only
    on its own system's numbers and may not void a confirmed number: once written into
    WHMCS the number is on a legal document, so only an admin can void it.

    Returns:
        The entry and whether it changed now.
    """
    sequence, period, number = parse_id(allocation_id)
    reply, wait = scripts.run(
        client, scripts.TRANSITION,
        [keys.seq_ledger(sequence, period), keys.seq_stats(sequence)],
        [number, action, actor_kind, actor_system or "", actor, iso(utcnow()), value],
        durability,
    )
    if reply[0] == "error":
        code = reply[1]
        if code == "notfound":
            raise NotFound(f"No allocation {allocation_id!r}")
        if code == "forbidden":
            raise Forbidden("This agent token belongs to another system")
        entry = entry_out(reply[2])
        if code == "mismatch":
            raise Conflict(f"invoicenum {value!r} is not the allocated number "
                           f"{entry['formatted']!r}")
        if code == "void":
            raise Conflict(f"{allocation_id} is void and cannot be confirmed")
        raise Forbidden(f"{allocation_id} is confirmed: only an admin can void it")
    if durability is not None:
        scripts.check_durable(wait, durability)
    return entry_out(reply[1]), reply[0] == "changed"
