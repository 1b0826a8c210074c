"""Rebuild the numbering from the numbers in use, when the store is behind reality.

The evidence is every number printed in the systems' WHMCS and every number agents' journals
received (``coordinator/backup/evidence.py`` gathers it). :func:`plan` reads it with each
series' formats and compares it with the ledger; :func:`apply` then, per sequence and period,
writes each number the ledger lacks as a ``recovered`` entry (with the reason, the source and
who recovered it; its reference answers it on replay), raises the counter to the highest
number in use, never lowers it, and records an audit record and chain events — one atomic
step per period (``recover.lua``). Last, the series is marked initialised (a restore's wait
ends): allocation continues above every number in use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.lua import LuaScript
from coordinator.numbering import guard, scripts, settled
from coordinator.numbering.sequences import CREDIT_NOTE, DEFAULT_SERIES, INVOICE, SEQUENCES

RECOVER = LuaScript.load(__package__, "recover")
"""One period of one sequence: recovered entries, the raised counter, events, audit."""

ENTRIES_PER_STEP = 500
"""Recovered entries written per script run (a long period is several atomic steps)."""


@dataclass(frozen=True)
class Evidence:
    """One number seen in use: where, for which document, and how it reached us.

    ``series``/``sequence``/``period``/``number`` are known for a journal's numbers (the
    coordinator told the agent); a WHMCS number is read with its system's series' formats.
    """

    system: str
    formatted: str
    source: str
    reference: str = ""
    document: str = ""
    series: str | None = None
    sequence: str | None = None
    period: str | None = None
    number: int | None = None


@dataclass
class Period:
    """What recovery does to one period of one sequence of one series."""

    series: str
    sequence: str
    period: str
    counter: int
    increment: int
    numbers: dict[int, Evidence] = field(default_factory=dict)
    in_ledger: set[int] = field(default_factory=set)

    @property
    def highest(self) -> int:
        """The highest number in use (evidence or counter)."""
        return max([self.counter, *self.numbers])

    @property
    def to_recover(self) -> list[int]:
        """The numbers in use the ledger lacks, in order."""
        return sorted(set(self.numbers) - self.in_ledger)

    @property
    def holes(self) -> list[tuple[int, int]]:
        """``(after, moved_to)`` for each run of numbers above the counter that no source
        showed: the counter jumps them, recorded like an admin's skip."""
        above = [self.counter, *sorted(n for n in self.numbers if n > self.counter)]
        return [(a, b - self.increment) for a, b in zip(above, above[1:], strict=False)
                if b - a > self.increment]

    def describe(self) -> dict[str, Any]:
        """The plan of this period, as the dry run prints it."""
        sources: dict[str, int] = {}
        for number in self.to_recover:
            source = self.numbers[number].source
            sources[source] = sources.get(source, 0) + 1
        return {"series": self.series, "sequence": self.sequence, "period": self.period,
                "counter": self.counter, "new_counter": self.highest,
                "next_number": self.highest + self.increment,
                "raise": self.highest > self.counter, "in_use": len(self.numbers),
                "already_in_ledger": len(set(self.numbers) & self.in_ledger),
                "recover": len(self.to_recover), "sources": sources,
                "unknown_skipped": sum((b - a) // self.increment for a, b in self.holes),
                "first": self.to_recover[:1], "last": self.to_recover[-1:]}


@dataclass
class Plan:
    """Every period recovery touches, the series it initialises, and what it could not read."""

    periods: list[Period]
    series: list[str]
    unread: list[Evidence]

    def describe(self) -> dict[str, Any]:
        """The whole plan, as the dry run prints it (JSON)."""
        return {"periods": [p.describe() for p in self.periods],
                "initialise_series": self.series,
                "unread": len(self.unread),
                "unread_examples": [f"{e.formatted} ({e.system}, {e.source})"
                                    for e in self.unread[:5]]}


def _document(evidence: Evidence, sequence: str) -> str:
    if evidence.document:
        return evidence.document
    return CREDIT_NOTE if sequence == CREDIT_NOTE else INVOICE


def plan(
    client: redis.Redis, evidence: Iterable[Evidence], series_of: dict[str, str],
) -> Plan:
    """Read the evidence with each series' formats and compare it with the ledger.

    Args:
        series_of: system -> its series (a WHMCS number is read with that series' formats).
    """
    formats: dict[str, list] = {}
    periods: dict[tuple[str, str, str], Period] = {}
    unread: list[Evidence] = []
    for item in evidence:
        name = item.series or series_of.get(item.system, DEFAULT_SERIES)
        if item.number is not None and item.sequence in SEQUENCES and item.period:
            sequence, period, number = item.sequence, item.period, item.number
        else:
            if name not in formats:
                formats[name] = guard.numbering_sequences(client, name)
            parsed = guard.read_number(formats[name], item.formatted)
            if parsed is None:
                unread.append(item)
                continue
            sequence, period, number = parsed
        key = (name, sequence, period)
        if key not in periods:
            periods[key] = Period(name, sequence, period, 0, 1)
        known = periods[key].numbers.get(number)
        # Two sources of one number: keep the one that names its document (a journal).
        if known is None or (not known.reference and item.reference):
            periods[key].numbers[number] = Evidence(
                item.system, item.formatted, item.source, item.reference,
                _document(item, sequence), name, sequence, period, number)
    for each in periods.values():
        each.counter = guard.counter(client, each.sequence, each.period, each.series)
        each.increment = int(client.hget(keys.seq_settings(each.sequence, each.series),
                                         "increment") or 1)
        ordered = sorted(each.numbers)  # never empty: a period is made for a number it holds
        in_ledger = client.hmget(keys.seq_ledger(each.sequence, each.period, each.series),
                                 [str(n) for n in ordered])
        each.in_ledger = {n for n, raw in zip(ordered, in_ledger, strict=True) if raw or (
            settled.find(client, each.sequence, each.period, n, series=each.series))}
    names = guard.all_series(client)
    return Plan(sorted(periods.values(), key=lambda p: (p.series, p.sequence, p.period)),
                [n for n in names if not guard.is_initialised(client, n)], unread)


def apply(
    client: redis.Redis, recovery: Plan, *, actor: str, reason: str,
    durability: Any = None,
) -> list[dict[str, Any]]:
    """Carry out ``recovery``; return per period what was done (counters, recovered, skipped).

    Counters are raised before the series' guard lets allocation in again, so no number in
    use is ever handed out.
    """
    done = []
    now = iso(utcnow())
    touched = {p.series for p in recovery.periods} | set(recovery.series)
    for name in sorted(touched):
        if not guard.is_initialised(client, name):
            # Should a step below fail, its entries must not pass for the previous release's
            # data: allocation would adopt the series with the periods not reached unraised.
            guard.mark_recovering(client, f"by {actor}: {reason}", name)
    for each in recovery.periods:
        numbers = each.to_recover or []
        chunks = [numbers[i:i + ENTRIES_PER_STEP]
                  for i in range(0, len(numbers), ENTRIES_PER_STEP)] or [[]]
        result = {"series": each.series, "sequence": each.sequence, "period": each.period,
                  "counter": None, "new_counter": None, "recovered": 0, "skipped": []}
        for chunk in chunks:
            reply = _run_step(client, each, chunk, now, actor, reason, durability)
            result["counter"] = result["counter"] or reply[0]
            result["new_counter"] = reply[1]
            result["recovered"] += int(reply[2])
            skipped = json.loads(reply[3])
            result["skipped"] += skipped if isinstance(skipped, list) else []
        done.append(result)
    for name in touched:
        guard.mark_initialised(client, f"recovered by {actor}: {reason}", name)
    return done


def _run_step(
    client: redis.Redis, each: Period, chunk: list[int], now: str, actor: str, reason: str,
    durability: Any,
) -> list[Any]:
    fixed = [keys.seq_stats(each.sequence, each.series),
             keys.seq_counter(each.sequence, each.period, each.series),
             keys.seq_ledger(each.sequence, each.period, each.series),
             keys.seq_ledger_order(each.sequence, each.period, each.series),
             keys.seq_periods(each.sequence, each.series), keys.series_formatted(each.series),
             keys.seq_events(each.sequence, each.series),
             keys.seq_audit(each.sequence, each.series),
             keys.seq_settings(each.sequence, each.series),
             keys.seq_skips(each.sequence, each.period, each.series)]
    refs: list[str] = []
    entries = []
    for number in chunk:
        item = each.numbers[number]
        ref_key = keys.seq_refs(each.sequence, item.document, item.system, each.series)
        if item.reference and ref_key not in refs:
            refs.append(ref_key)
        entries.append({"number": str(number), "formatted": item.formatted,
                        "system": item.system, "document": item.document,
                        "reference": item.reference, "source": item.source,
                        "refs": len(fixed) + refs.index(ref_key) + 1 if item.reference else 0})
    args = [each.period, now, actor, reason, each.sequence,
            "" if each.series == DEFAULT_SERIES else f"{each.series}/", json.dumps(entries),
            str(each.highest), json.dumps([[str(a), str(b)] for a, b in each.holes])]
    reply, wait = scripts.run(client, RECOVER, [*fixed, *refs], args, durability)
    scripts.check_durable(wait)
    return reply
