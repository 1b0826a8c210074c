"""Take numbers, confirm them, void them: the allocation hot path and the status changes.

An allocation is one Lua script (``allocate.lua``) plus ``WAITAOF`` in one round trip. Three
facts that pick the script's keys are guessed from earlier answers (:class:`Hints`, one per
app or caller, never shared between them): the series of the system, the sequence that
numbers credit notes, and each sequence's reset. The script checks every guess atomically
against what is stored in its own slot and answers ``member``, ``moved`` or ``reset`` when
one is wrong, so a stale guess costs one more round trip, never a number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
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
from coordinator.numbering import chain, guard, scripts, settled
from coordinator.numbering import series as series_mod
from coordinator.numbering.scripts import Durability
from coordinator.numbering.sequences import (
    CREDIT_NOTE,
    DEFAULT_SERIES,
    DEFAULTS,
    INVOICE,
    MAX_NUMBER,
    ensure_sequences,
    period_of,
)


@dataclass
class Hints:
    """What one app (or one caller) learnt about routing; only ever a guess.

    Each app keeps its own (``app.extensions``), so two apps in one process, or tests, never
    steer each other. Plain dict reads and writes under the GIL: threads of one app may race
    on a hint, which costs at most one more round trip.
    """

    series_of: dict[str, str] = field(default_factory=dict)
    """system -> the series it was last numbered in."""

    credit_note_home: dict[str, str] = field(default_factory=dict)
    """series -> the sequence that numbered its credit notes last time."""

    reset: dict[tuple[str, str], str] = field(default_factory=dict)
    """(series, sequence) -> the reset the sequence had last time."""


_ID = re.compile(
    r"^(?:([a-z0-9][a-z0-9_-]{0,62})/)?(invoice|credit_note):(all|\d{4}|\d{4}-\d{2}):"
    r"([1-9]\d{0,14})$")


def entry_out(raw: str, series: str) -> dict[str, Any]:
    """Turn a stored ledger entry into the API's allocation object (numbers as integers)."""
    entry = json.loads(raw)
    entry["number"] = int(entry["number"])
    entry["series"] = series
    entry.pop("previous", None)
    return entry


def parse_id(allocation_id: str) -> tuple[str, str, str, str]:
    """Split ``[series/]invoice:2026:51`` into series, sequence, period and number.

    ``default`` is never spelled out (its ids are as before series existed).

    Raises:
        NotFound: a malformed id.
    """
    match = _ID.match(allocation_id)
    if not match or match.group(1) == DEFAULT_SERIES:
        raise NotFound(f"No allocation {allocation_id!r}")
    return match.group(1) or DEFAULT_SERIES, match.group(2), match.group(3), match.group(4)


@dataclass(frozen=True)
class Item:
    """One document to number: ``invoice`` or ``credit_note``, its WHMCS id and its date."""

    document: str
    reference: str
    day: date


def allocate(
    client: redis.Redis,
    system: str,
    document: str,
    reference: str,
    day: date,
    durability: Durability | None = None,
    hints: Hints | None = None,
    appended: list[chain.Appended] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Number one WHMCS document, or return the number it already has.

    Args:
        client: Redis client.
        system: The system the document belongs to (from the agent's token); its series
            numbers it.
        document: ``invoice`` or ``credit_note``.
        reference: The document's id in that WHMCS (validated by the caller).
        day: The document date; it picks the period.
        durability: Wait for fsync/replicas before returning (None: do not wait).
        hints: The caller's routing guesses (None: start from the defaults).
        appended: When given, receives the ledger events a new number appended, for
            :func:`chain.seal_appended` (the caller seals, e.g. after its response).

    Returns:
        The allocation and whether it is new (False: a replay of an earlier allocation).

    Raises:
        Conflict: the reference was numbered in another period, the sequence is exhausted,
            or the formatted number is already used in the series.
        NotDurable: the write was not confirmed durable in time (retry the same call).
    """
    try:
        return allocate_batch(client, system, [Item(document, reference, day)], durability,
                              hints, appended)[0]
    except BatchConflict as refused:
        raise Conflict(refused.reason, refused.fields and {"json": refused.fields}) from None


class BatchConflict(Conflict):
    """Item ``index`` of a batch cannot be numbered; nothing was taken."""

    def __init__(self, index: int, reason: str, fields: dict[str, list[str]] | None = None):
        self.index, self.reason, self.fields = index, reason, fields
        super().__init__(
            f"Item {index} cannot be numbered, so no number of this batch was taken: {reason}",
            {"json": {"items": {str(index): fields or {"reference": [reason]}}}})


def allocate_batch(
    client: redis.Redis,
    system: str,
    items: list[Item],
    durability: Durability | None = None,
    hints: Hints | None = None,
    appended: list[chain.Appended] | None = None,
) -> list[tuple[dict[str, Any], bool]]:
    """Number several documents of one system atomically: all of them, or none.

    One script call in the series' slot (``allocate.lua`` takes N items) and one durability
    wait, so a batch is as durable as a single allocation and costs one round trip. Items are
    numbered in order, exactly as if allocated one by one (a reference given twice is a replay
    of its first item). Each new number appends its ``issued`` event to its sequence's
    ledger chain, as a single allocation does; ``appended`` (when given) receives, per
    sequence appended to, its unsealed events, for the caller to seal
    (:func:`chain.seal_appended`).

    Returns:
        Per item, in order: the allocation and whether it is new.

    Raises:
        BatchConflict: an item cannot be numbered (index 0-based); nothing was taken.
        NotDurable: the writes were not confirmed durable in time (retry the same batch).
    """
    hints = hints if hints is not None else Hints()
    series = hints.series_of.get(system, DEFAULT_SERIES)
    now = iso(utcnow())
    tried: set[str] = set()
    while True:
        credit_home = hints.credit_note_home.get(series, CREDIT_NOTE)
        seq_keys: list[str] = []
        args: list[Any] = []
        where: list[tuple[str, str]] = []
        for item in items:
            sequence = INVOICE if item.document == INVOICE else credit_home
            reset = hints.reset.get((series, sequence), DEFAULTS[sequence]["reset"])
            period = period_of(item.day, reset)
            where.append((sequence, period))
            seq_keys += [
                keys.seq_settings(sequence, series), keys.seq_stats(sequence, series),
                keys.seq_refs(sequence, item.document, system, series),
                keys.seq_periods(sequence, series), keys.seq_counter(sequence, period, series),
                keys.seq_ledger(sequence, period, series),
                keys.seq_ledger_order(sequence, period, series), keys.series_members(series),
                keys.series_formatted(series), keys.seq_events(sequence, series),
                keys.seq_chain(sequence, series), keys.seq_guard(sequence, series),
            ]
            args += [item.document, system, item.reference, item.day.isoformat(), period,
                     reset, now, MAX_NUMBER, sequence,
                     "" if series == DEFAULT_SERIES else f"{series}/",
                     "1" if series == DEFAULT_SERIES else "0"]
        reply, wait = scripts.run(client, scripts.ALLOCATE, seq_keys, args, durability)
        if reply[0] == "ok":
            results = []
            for index, (kind, raw) in enumerate(reply[1:len(items) + 1]):
                if raw is None:
                    # A replay of a settled number: its entry is in a settled block.
                    raw = _settled_replay(client, series, system, items[index], *where[index])
                if raw is None:
                    # The reference index names a ledger entry that is not there: damaged
                    # data that no retry repairs (and numbering it anew could print a number
                    # twice).
                    item, (sequence, period) = items[index], where[index]
                    raise InternalFault(
                        f"the reference index of system {system!r} says {item.document} "
                        f"{item.reference!r} was numbered in {sequence} period {period}, but "
                        "that ledger entry is missing; no new number was taken")
                results.append((entry_out(raw, series), kind == "new"))
            hints.series_of[system] = series
            if appended is not None:
                appended.extend(
                    chain.Appended(series, sequence, int(length), head, tuple(unsealed))
                    for sequence, length, head, unsealed in reply[len(items) + 1])
            scripts.check_durable(wait)
            return results
        index = int(reply[1]) - 1
        code, detail = reply[2], reply[3:]
        item, (sequence, _) = items[index], where[index]
        if code == "member" and f"member:{series}" not in tried:
            tried.add(f"member:{series}")
            series = _reroute(client, system, series, detail[0], hints)
        elif code == "uninitialized" and f"init:{series}" not in tried:
            tried.add(f"init:{series}")
            ensure_sequences(client, series)
        elif code == "reset" and f"reset:{series}:{sequence}" not in tried:
            tried.add(f"reset:{series}:{sequence}")
            hints.reset[(series, sequence)] = detail[0]
        elif code == "moved" and f"moved:{series}:{sequence}" not in tried:
            tried.add(f"moved:{series}:{sequence}")
            hints.credit_note_home[series] = INVOICE if sequence == CREDIT_NOTE else CREDIT_NOTE
        elif code == "moved":
            raise ServiceUnavailable(
                "Credit-note numbering is being switched between sequences; retry shortly")
        elif code == "member":
            raise ServiceUnavailable(
                f"System {system!r} is between series (a move or removal did not finish); "
                "retry shortly, or repeat the admin's change")
        elif code == "not_initialised" and f"adopt:{series}" not in tried and (
                guard.adopt(client, series)):
            # Data of the previous release, or a new series in a live store: initialised now.
            tried.add(f"adopt:{series}")
        elif code == "not_initialised":
            raise NumberingNotInitialised(guard.not_initialised_message(client, series))
        elif code == "behind":
            raise NumberingBehind(guard.behind_message(series, sequence, where[index][1],
                                                       detail[0]))
        elif code == "period":
            raise BatchConflict(
                index, f"Reference {item.reference!r} already has number {detail[0]}, in "
                f"another period than the date {item.day.isoformat()} falls in",
                {"date": ["Does not match the period of the existing allocation."]})
        elif code in ("exhausted", "duplicate"):
            raise BatchConflict(index, _no_number(code, detail, sequence, series))
        else:
            raise ServiceUnavailable(f"Sequence {sequence} is not initialised; retry")


def _no_number(code: str, detail: list, sequence: str, series: str) -> str:
    """Why a script could not take the next number (nothing was written); ``detail`` is what
    follows the code in its reply."""
    if code == "exhausted":
        return (f"sequence exhausted: {sequence} cannot issue a number after {detail[0]} "
                f"within its padding (or the cap {MAX_NUMBER}); raise the padding or "
                "change the format's period")
    return (f"The next {sequence} number would print as {detail[0]!r}, which series "
            f"{series!r} already issued ({detail[1]}); no number was taken. Raise "
            "next_number or change the format so the series prints a new string")


def _reroute(client: redis.Redis, system: str, series: str, member: str, hints: Hints) -> str:
    """After ``series`` refused ``system``: find its series in the registry (and, when the
    registry already names ``series`` and the series never knew the system, finish the
    join that a registration or move left undone). Returns the series to try."""
    named = series_mod.series_of_system(client, system) or DEFAULT_SERIES
    if named == series and not member:
        series_mod.join(client, series, system, only_if_new=True)
    hints.series_of[system] = named
    return named


def _settled_replay(client: redis.Redis, series: str, system: str, item: Any, sequence: str,
                    period: str) -> str | None:
    """The entry of a replayed document whose number is settled (``numbering.settled``)."""
    known = client.hget(keys.seq_refs(sequence, item.document, system, series), item.reference)
    if known is None:
        return None
    found_series, found_sequence, found_period, number = parse_id(known)
    return settled.find(client, found_sequence, found_period, number, series=found_series)


def get(client: redis.Redis, allocation_id: str) -> dict[str, Any]:
    """Return one allocation by id, or raise ``NotFound``."""
    series, sequence, period, number = parse_id(allocation_id)
    raw = client.hget(keys.seq_ledger(sequence, period, series), number)
    if raw is None:
        raw = settled.find(client, sequence, period, number, series=series)
    if raw is None:
        raise NotFound(f"No allocation {allocation_id!r}")
    return entry_out(raw, series)


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
    series, sequence, period, number = parse_id(allocation_id)
    reply, wait = scripts.run(
        client, scripts.TRANSITION,
        [keys.seq_ledger(sequence, period, series), keys.seq_stats(sequence, series),
         keys.seq_events(sequence, series), keys.seq_voids(sequence, period, series)],
        [number, action, actor_kind, actor_system or "", actor, iso(utcnow()), value],
        durability,
    )
    if reply[0] == "error":
        code = reply[1]
        if code == "notfound" and settled.unsettle(client, sequence, period, number,
                                                   series=series):
            # A settled number: back in the ledger hash now, where the script changes it.
            return transition(client, allocation_id, action, value, actor_kind=actor_kind,
                              actor_system=actor_system, actor=actor, durability=durability)
        if code == "notfound":
            raise NotFound(f"No allocation {allocation_id!r}")
        if code == "forbidden":
            raise Forbidden("This agent token belongs to another system")
        entry = entry_out(reply[2], series)
        if code == "mismatch":
            raise Conflict(f"invoicenum {value!r} is not the allocated number "
                           f"{entry['formatted']!r}")
        if code == "void":
            raise Conflict(f"{allocation_id} is void and cannot be confirmed")
        raise Forbidden(f"{allocation_id} is confirmed: only an admin can void it")
    scripts.check_durable(wait)
    return entry_out(reply[1], series), reply[0] == "changed"


def _reset_of(period: str) -> str:
    """The reset a period's shape implies: ``all`` never, ``2026`` yearly, ``2026-11`` monthly."""
    return "never" if period == "all" else ("yearly" if len(period) == 4 else "monthly")


def reissue(
    client: redis.Redis,
    allocation_id: str,
    reason: str,
    *,
    actor: str,
    durability: Durability | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Give the document of a void allocation a new number (an admin's audited reissue).

    Only a ``void`` allocation that is still its document's number (nothing reissued or
    allocated since) qualifies. The new number is taken in the void one's sequence and period,
    exactly as an allocation takes it; the entries name each other (``reissued_as`` /
    ``reissue_of``), the reason is kept, and the agent's next ``allocate`` of that reference
    answers the new number. The void entry stays in the ledger.

    Returns:
        The new allocation and the void one (now with ``reissued_as``).

    Raises:
        NotFound: no such allocation.
        Conflict: it is not void, its document has another number, the system is no longer
            numbered here, or no number can be taken (exhausted, duplicate string).
        NotDurable: the write was not confirmed durable in time.
    """
    series, sequence, period, number = parse_id(allocation_id)
    raw = client.hget(keys.seq_ledger(sequence, period, series), number)
    if raw is None and settled.find(client, sequence, period, number, series=series):
        raise Conflict(f"{allocation_id} is confirmed: only a void number can be reissued "
                       "(void it first, with the reason)")  # only confirmed ones settle
    if raw is None:
        raise NotFound(f"No allocation {allocation_id!r}")
    old = json.loads(raw)
    reply, wait = scripts.run(
        client, scripts.REISSUE,
        [keys.seq_settings(sequence, series), keys.seq_stats(sequence, series),
         keys.seq_refs(sequence, old["document"], old["system"], series),
         keys.seq_periods(sequence, series), keys.seq_counter(sequence, period, series),
         keys.seq_ledger(sequence, period, series),
         keys.seq_ledger_order(sequence, period, series), keys.series_members(series),
         keys.series_formatted(series), keys.seq_events(sequence, series),
         keys.seq_guard(sequence, series)],
        [number, reason, actor, iso(utcnow()), _reset_of(period), MAX_NUMBER,
         "" if series == DEFAULT_SERIES else f"{series}/",
         "1" if series == DEFAULT_SERIES else "0"],
        durability,
    )
    if reply[0] == "new":
        scripts.check_durable(wait)
        return entry_out(reply[1], series), entry_out(reply[2], series)
    code = reply[1]
    if code == "notfound":
        raise NotFound(f"No allocation {allocation_id!r}")
    if code == "status":
        status = json.loads(reply[2])["status"]
        raise Conflict(f"{allocation_id} is {status}: only a void number can be reissued "
                       "(void it first, with the reason)")
    if code == "live":
        now_id = reply[2] or "none"
        raise Conflict(f"The document of {allocation_id} ({old['document']} "
                       f"{old['reference']!r} of system {old['system']!r}) now has number "
                       f"{now_id}; only the document's current number can be reissued, and "
                       "only when it is void")
    if code == "member":
        raise Conflict(f"System {old['system']!r} is no longer numbered by series {series!r}; "
                       "its documents get numbers in its current series")
    if code == "moved":
        raise Conflict(f"Credit notes of series {series!r} are no longer numbered in "
                       f"{sequence}; the agent's next allocation of this document takes a "
                       "number in the sequence that numbers them now")
    if code in ("exhausted", "duplicate"):
        raise Conflict(_no_number(code, reply[2:], sequence, series))
    if code == "not_initialised" and guard.adopt(client, series):
        # Data of the previous release, adopted here as by allocate (once: it is now marked).
        return reissue(client, allocation_id, reason, actor=actor, durability=durability)
    if code == "not_initialised":
        raise NumberingNotInitialised(guard.not_initialised_message(client, series))
    if code == "behind":
        raise NumberingBehind(guard.behind_message(series, sequence, period, reply[2]))
    raise InternalFault(f"reissue of {allocation_id} refused with {code!r}: the stored "
                        "settings contradict the ledger entry; no number was taken")
