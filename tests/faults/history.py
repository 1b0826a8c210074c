"""A history checker for allocations: what agents were told against what the ledger holds.

Every attempt (one HTTP request) is recorded; every 2xx answer is an acknowledgement. After the
run the ledger is read back from the coordinator and ``check`` verifies the invariants of
DESIGN.md that a client can observe:

1. no number (sequence, period, number) is acknowledged for two different references;
2. every reference (system, document, reference) was acknowledged one number only, and the
   ledger holds that number for that reference;
3. every ledger entry is accounted for: acknowledged, voided with a reason, or issued for a
   reference that was attempted but never acknowledged (listed by name, never silently dropped);
4. per (sequence, period) the ledger's numbers are contiguous from the first issued: a missing
   number is a violation (a voided number is in the ledger, so it is explained, not missing).

Histories from several processes merge through JSON lines (``dump``/``load``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Ref = tuple[str, str, str]
"""(system, document, reference): one WHMCS document."""

Slot = tuple[str, str, int]
"""(sequence, period, number): one issued number."""


@dataclass
class Attempt:
    """One allocation request and what came of it."""

    system: str
    document: str
    reference: str
    date: str | None
    started: float
    finished: float = 0.0
    status: int | None = None
    """HTTP status, or None when no answer arrived (connection cut, timeout)."""
    error: str | None = None
    body: dict[str, Any] | None = None

    @property
    def ref(self) -> Ref:
        return (self.system, self.document, self.reference)

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.body is not None

    @property
    def slot(self) -> Slot:
        assert self.body is not None
        return (self.body["sequence"], str(self.body["period"]), int(self.body["number"]))


@dataclass
class Verdict:
    """What ``check`` found. ``ok`` when ``violations`` is empty."""

    counts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    unacknowledged_issued: list[str] = field(default_factory=list)
    voided: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self, label: str = "") -> str:
        """The one-line verdict every scenario prints."""
        head = "HISTORY OK" if self.ok else f"HISTORY VIOLATED ({len(self.violations)})"
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        text = f"{head}{' [' + label + ']' if label else ''}: {counts}"
        if self.unacknowledged_issued:
            text += f"; issued-unacked: {', '.join(self.unacknowledged_issued[:5])}"
            if len(self.unacknowledged_issued) > 5:
                text += f" (+{len(self.unacknowledged_issued) - 5})"
        if self.violations:
            text += "\n  " + "\n  ".join(self.violations[:20])
            if len(self.violations) > 20:
                text += f"\n  ... and {len(self.violations) - 20} more"
        return text


class History:
    """Thread-safe record of allocation attempts."""

    def __init__(self, attempts: Iterable[Attempt] = ()) -> None:
        self._lock = threading.Lock()
        self.attempts: list[Attempt] = list(attempts)

    def begin(self, system: str, document: str, reference: str, date: str | None) -> Attempt:
        """Start recording one request; finish it with ``end``."""
        return Attempt(system, document, reference, date, started=time.monotonic())

    def end(
        self, attempt: Attempt, status: int | None, body: Any = None, error: str | None = None
    ) -> Attempt:
        """Record the outcome of ``attempt``."""
        attempt.finished = time.monotonic()
        attempt.status = status
        attempt.body = body if isinstance(body, dict) else None
        attempt.error = error
        with self._lock:
            self.attempts.append(attempt)
        return attempt

    def extend(self, other: History | Iterable[Attempt]) -> None:
        """Merge another history (e.g. one loaded from a child process)."""
        items = other.attempts if isinstance(other, History) else list(other)
        with self._lock:
            self.attempts.extend(items)

    @property
    def acknowledged(self) -> list[Attempt]:
        return [a for a in self.attempts if a.acknowledged]

    def latencies(self, acknowledged_only: bool = True) -> list[float]:
        """Seconds per request."""
        return [a.finished - a.started for a in self.attempts
                if a.acknowledged or not acknowledged_only]

    def status_counts(self) -> Counter:
        """Requests by HTTP status (``None`` = no answer)."""
        return Counter("no-answer" if a.status is None else a.status for a in self.attempts)

    def dump(self, path: str | Path) -> None:
        """Write the attempts as JSON lines (for merging across processes)."""
        with open(path, "w") as handle:
            for attempt in self.attempts:
                handle.write(json.dumps(asdict(attempt)) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read attempts written by ``dump``."""
        with open(path) as handle:
            return cls(Attempt(**json.loads(line)) for line in handle if line.strip())

    def slots_touched(self) -> set[tuple[str, str]]:
        """(sequence, period) pairs acknowledged at least once (the ledgers to read back)."""
        return {(a.slot[0], a.slot[1]) for a in self.acknowledged}


def _name(ref: Ref) -> str:
    return "/".join(ref)


def _slot_name(slot: Slot) -> str:
    return f"{slot[0]}:{slot[1]}:{slot[2]}"


def check(
    history: History,
    ledger: Iterable[dict[str, Any]],
    *,
    first_number: dict[tuple[str, str], int] | None = None,
    increment: int = 1,
) -> Verdict:
    """Verify ``history`` against ``ledger`` (entries as the ledger API returns them).

    Args:
        history: every attempt the agents made.
        ledger: every entry of every (sequence, period) the run touched.
        first_number: the number each (sequence, period) should start at, when known; without
            it contiguity is checked from the lowest number in the ledger.
        increment: the sequences' increment during the run.
    """
    verdict = Verdict()
    v = verdict.violations
    acks = history.acknowledged

    # 1. one reference per acknowledged number
    refs_of_slot: dict[Slot, set[Ref]] = defaultdict(set)
    for a in acks:
        refs_of_slot[a.slot].add(a.ref)
    for slot, refs in sorted(refs_of_slot.items()):
        if len(refs) > 1:
            v.append(f"DUPLICATE: {_slot_name(slot)} acknowledged to "
                     + " and ".join(sorted(_name(r) for r in refs)))

    # 2. one number per reference
    slots_of_ref: dict[Ref, set[Slot]] = defaultdict(set)
    for a in acks:
        slots_of_ref[a.ref].add(a.slot)
    for ref, slots in sorted(slots_of_ref.items()):
        if len(slots) > 1:
            v.append(f"TWO NUMBERS: {_name(ref)} acknowledged "
                     + " and ".join(sorted(_slot_name(s) for s in slots)))

    # ledger indexes
    entries = list(ledger)
    by_slot: dict[Slot, list[dict[str, Any]]] = defaultdict(list)
    by_ref: dict[Ref, list[Slot]] = defaultdict(list)
    for e in entries:
        slot = (e["sequence"], str(e["period"]), int(e["number"]))
        by_slot[slot].append(e)
        by_ref[(e["system"], e["document"], str(e["reference"]))].append(slot)
    for slot, found in sorted(by_slot.items()):
        if len(found) > 1:
            v.append(f"LEDGER DUPLICATE: {_slot_name(slot)} appears {len(found)} times")
    for ref, slots in sorted(by_ref.items()):
        if len(slots) > 1:
            v.append(f"LEDGER TWO NUMBERS: {_name(ref)} holds "
                     + ", ".join(_slot_name(s) for s in sorted(slots)))

    # 2b. the ledger holds what was acknowledged
    lost = 0
    for ref, slots in sorted(slots_of_ref.items()):
        for slot in sorted(slots):
            found = by_slot.get(slot)
            if not found:
                lost += 1
                v.append(f"LOST: {_slot_name(slot)} acknowledged to {_name(ref)}, not in ledger")
            elif not any((e["system"], e["document"], str(e["reference"])) == ref for e in found):
                v.append(f"LEDGER DISAGREES: {_slot_name(slot)} acknowledged to {_name(ref)}, "
                         f"ledger says {_name(_entry_ref(found[0]))}")

    # 3. every ledger entry accounted for
    attempted = {a.ref for a in history.attempts}
    acked_refs = set(slots_of_ref)
    for e in entries:
        ref = _entry_ref(e)
        slot_text = f"{e['sequence']}:{e['period']}:{e['number']}"
        if e.get("status") == "void":
            verdict.voided.append(f"{slot_text} ({e.get('void_reason') or e.get('reason')})")
            if not (e.get("void_reason") or e.get("reason")):
                v.append(f"VOID WITHOUT REASON: {slot_text}")
        elif ref in acked_refs:
            continue
        elif ref in attempted:
            verdict.unacknowledged_issued.append(f"{slot_text}={_name(ref)}")
        else:
            v.append(f"UNEXPLAINED: {slot_text} issued to {_name(ref)}, never requested")

    # 4. contiguity per (sequence, period)
    numbers: dict[tuple[str, str], list[int]] = defaultdict(list)
    for sequence, period, number in by_slot:
        numbers[(sequence, period)].append(number)
    gaps = 0
    for key, nums in sorted(numbers.items()):
        nums.sort()
        start = (first_number or {}).get(key, nums[0])
        expected = set(range(start, nums[-1] + 1, increment))
        missing = sorted(expected - set(nums))
        gaps += len(missing)
        if missing:
            v.append(f"GAP: {key[0]}:{key[1]} misses {missing[:10]}"
                     + (f" (+{len(missing) - 10})" if len(missing) > 10 else ""))
        stray = sorted(set(nums) - expected)
        if stray:
            v.append(f"OFF-STEP: {key[0]}:{key[1]} has {stray[:10]} (increment {increment})")

    statuses = history.status_counts()
    verdict.counts = {
        "attempts": len(history.attempts),
        "acks": len(acks),
        "new": sum(1 for a in acks if a.status == 201),
        "replays": sum(1 for a in acks if a.status == 200),
        "references": len(attempted),
        "acked_refs": len(acked_refs),
        "ledger": len(entries),
        "issued_unacked": len(verdict.unacknowledged_issued),
        "voided": len(verdict.voided),
        "lost": lost,
        "gaps": gaps,
        **{f"http_{k}": n for k, n in sorted(statuses.items(), key=str) if k not in (200, 201)},
    }
    return verdict


def _entry_ref(e: dict[str, Any]) -> Ref:
    return (e["system"], e["document"], str(e["reference"]))


Fetch = Callable[[str], tuple[int, Any]]
"""``fetch(path_with_query) -> (status, json)``: a GET as admin (test client or requests)."""


def read_ledger(fetch: Fetch, sequence: str, period: str, page: int = 500) -> list[dict[str, Any]]:
    """Read a whole ledger through ``GET /v1/sequences/{name}/ledger``, page by page."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        status, body = fetch(
            f"/v1/sequences/{sequence}/ledger?period={period}&after={after}&limit={page}"
        )
        if status != 200:
            raise AssertionError(f"ledger read failed: {status} {body}")
        items = body if isinstance(body, list) else next(
            body[k] for k in ("items", "entries", "ledger") if k in body
        )
        for item in items:
            item.setdefault("sequence", sequence)
            item.setdefault("period", period)
        out.extend(items)
        if len(items) < page:
            return out
        after = int(items[-1]["number"])


def read_all_ledgers(fetch: Fetch, history: History,
                     extra: Iterable[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """Read the ledger of every (sequence, period) acknowledged in ``history`` or in ``extra``."""
    wanted = history.slots_touched() | set(extra)
    entries: list[dict[str, Any]] = []
    for sequence, period in sorted(wanted):
        entries.extend(read_ledger(fetch, sequence, period))
    return entries
