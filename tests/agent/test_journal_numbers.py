"""The journal's memory of the numbers received: the agent refuses a number that went backwards.

What must hold for every history: a coordinator whose counters only move forward (any
increment, several agents and systems sharing a sequence, answers recorded in any order,
replays) never trips the guard; a coordinator that numbers from old data is caught as soon as
it hands this installation a new number at or below one it already holds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import Allocation, Journal, NumberWentBackwards


def allocation(
    reference: str, number: int, *, document: str = "invoice", sequence: str | None = None,
    period: str = "2026", series: str | None = None, replay: bool | None = None,
) -> Allocation:
    sequence = sequence or document
    raw = {
        "id": f"{series + '/' if series else ''}{sequence}:{period}:{number}",
        "number": number, "formatted": f"{sequence[:3].upper()}-{period}-{number:06d}",
        "sequence": sequence, "period": period, "system": "blue", "document": document,
        "reference": reference, "status": "issued", "issued_at": "2026-11-21T10:15:02Z",
    }
    if series:
        raw["series"] = series
    if replay is not None:
        raw["replay"] = replay
    return Allocation.from_json(raw)


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.sqlite3") as j:
        yield j


def test_a_new_number_at_or_below_one_received_is_refused_naming_both(journal) -> None:
    journal.record_allocated(allocation("10", 51), before=journal.mark())
    before = journal.mark()
    for number in (51, 40):
        with pytest.raises(NumberWentBackwards) as info:
            journal.record_allocated(allocation("11", number), before=before)
        assert (info.value.number, info.value.highest) == (number, 51)
        assert f"INV-2026-{number:06d}" in info.value.message
        assert "INV-2026-000051" in info.value.message and "invoice 10" in info.value.message
        assert journal.get("invoice", "11") is None  # nothing recorded to write
    journal.record_allocated(allocation("11", 52), before=before)


def test_what_may_pass(journal) -> None:
    journal.record_allocated(allocation("10", 51), before=journal.mark())
    before = journal.mark()
    # The same document answered its same number (a retry after a lost answer).
    journal.record_allocated(allocation("10", 51), before=before)
    # A replay of a number issued long ago to a document this journal never saw (taken by
    # `next` without a journal, or the agent died before recording it).
    journal.record_allocated(allocation("9", 50, replay=True), before=before)
    # Other sequences, periods and series count on their own.
    journal.record_allocated(allocation("12", 1, document="credit_note"), before=before)
    journal.record_allocated(allocation("13", 1, period="2027"), before=before)
    journal.record_allocated(allocation("14", 1, series="acme-us"), before=before)
    # Credit notes drawing from the invoice sequence are checked against invoices.
    with pytest.raises(NumberWentBackwards):
        journal.record_allocated(
            allocation("15", 30, document="credit_note", sequence="invoice"), before=before)
    # A number received by another process after our request was sent does not count.
    racing = journal.mark()
    journal.record_allocated(allocation("16", 60), before=journal.mark())
    journal.record_allocated(allocation("17", 59), before=racing)


def test_a_refused_number_stays_refused_when_it_comes_back_as_a_replay(journal) -> None:
    journal.record_allocated(allocation("10", 51), before=journal.mark())
    before = journal.mark()
    with pytest.raises(NumberWentBackwards):
        journal.record_allocated(allocation("11", 40), before=before)
    with pytest.raises(NumberWentBackwards):
        journal.record_allocated(allocation("11", 40, replay=True), before=journal.mark())
    with pytest.raises(NumberWentBackwards):
        journal.receive(allocation("11", 40, replay=True), before=journal.mark())


def test_a_journal_of_the_previous_release_keeps_its_numbers(tmp_path: Path) -> None:
    """Journals written before `received` existed: their allocations count from the start."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE allocations (document TEXT NOT NULL, reference TEXT NOT NULL, "
            "allocation_id TEXT NOT NULL UNIQUE, number INTEGER NOT NULL, formatted TEXT NOT "
            "NULL, state TEXT NOT NULL, invoicenum TEXT, void_reason TEXT, last_error TEXT, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
            "PRIMARY KEY (document, reference))"
        )
        db.executemany(
            "INSERT INTO allocations VALUES (?, ?, ?, ?, ?, 'confirmed', ?, NULL, NULL, "
            "'2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z')",
            [("invoice", "7", "invoice:2026:70", 70, "INV-2026-000070", "INV-2026-000070"),
             ("invoice", "8", "acme-us/invoice:2026:9", 9, "US-2026-000009", "US-2026-000009")],
        )
        # An id of no known shape, the oldest row: skipped, and the rows after it still count.
        db.execute(
            "INSERT INTO allocations VALUES ('invoice', '6', 'imported-6', 6, 'OLD-6', "
            "'confirmed', 'OLD-6', NULL, NULL, '2026-10-01T00:00:00Z', '2026-10-01T00:00:00Z')"
        )
    with Journal(path) as journal:
        assert journal.highest("default", "invoice", "2026") == 70
        assert journal.highest("acme-us", "invoice", "2026") == 9
        assert journal.get("invoice", "7").state == "confirmed"
        with pytest.raises(NumberWentBackwards):
            journal.record_allocated(allocation("20", 69), before=journal.mark())
        with pytest.raises(NumberWentBackwards):
            journal.record_allocated(allocation("21", 9, series="acme-us"), before=journal.mark())
    with Journal(path) as journal:  # reopening does not fill it twice
        assert journal.highest("default", "invoice", "2026") == 70


class Coordinator:
    """A coordinator whose counters only move forward (or, after ``restore``, do not)."""

    def __init__(self, increments: dict[str, int]) -> None:
        self.increments = increments
        self.counters: dict[str, int] = {}
        self.by_reference: dict[str, Allocation] = {}

    def allocate(self, reference: str, sequence: str) -> Allocation:
        known = self.by_reference.get(reference)
        if known is not None:
            return Allocation.from_json({**known.raw, "replay": True})
        self.counters[sequence] = self.counters.get(sequence, 0) + self.increments[sequence]
        made = allocation(reference, self.counters[sequence], sequence=sequence,
                          document=sequence, replay=False)
        self.by_reference[reference] = made
        return made


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

REQUESTS = st.lists(
    st.tuples(
        st.integers(0, 11),  # reference: some asked for again (replays)
        st.sampled_from(["invoice", "credit_note"]),
        st.booleans(),  # True: deliver the oldest answer in flight before sending
        st.sampled_from(["sidecar", "poller", "other-agent"]),  # who asks
    ),
    min_size=1,
    max_size=40,
)


@PROPERTY
@given(requests=REQUESTS, increments=st.tuples(st.integers(1, 7), st.integers(1, 7)))
def test_a_coordinator_that_only_moves_forward_is_never_refused(
    tmp_path_factory, requests, increments
) -> None:
    coordinator = Coordinator({"invoice": increments[0], "credit_note": increments[1]})
    with Journal(tmp_path_factory.mktemp("j") / "journal.sqlite3") as journal:
        in_flight: list[tuple[Allocation, int]] = []
        for reference, sequence, deliver_first, who in requests:
            if deliver_first and in_flight:
                _deliver(journal, in_flight)
            # Another agent of another system shares the sequence but not this journal.
            ref = f"{who}-{reference}" if who == "other-agent" else str(reference)
            before = journal.mark()
            answer = coordinator.allocate(ref, sequence)
            if who != "other-agent":
                # The sidecar and the poller answer in any order: record later, shuffled.
                in_flight.append((answer, before))
        while in_flight:
            _deliver(journal, in_flight)


def _deliver(journal: Journal, in_flight: list[tuple[Allocation, int]]) -> None:
    # Newest first: the most out-of-order delivery there is.
    answer, before = in_flight.pop()
    journal.record_allocated(answer, before=before)


@PROPERTY
@given(
    issued=st.integers(2, 30),
    restored_to=st.integers(0, 29),
    increment=st.integers(1, 5),
    later=st.integers(1, 10),
)
def test_numbering_from_an_old_backup_is_caught(
    tmp_path_factory, issued, restored_to, increment, later
) -> None:
    """After a restore the coordinator hands out numbers again: every new one at or below the
    highest this installation holds is refused; the first above it passes."""
    restored_to = min(restored_to, issued - 1)
    coordinator = Coordinator({"invoice": increment})
    with Journal(tmp_path_factory.mktemp("j") / "journal.sqlite3") as journal:
        for n in range(issued):
            before = journal.mark()
            journal.record_allocated(coordinator.allocate(f"old-{n}", "invoice"), before=before)
        highest = issued * increment
        assert journal.highest("default", "invoice", "2026") == highest
        # The restored backup knew only the first `restored_to` numbers.
        coordinator.counters["invoice"] = restored_to * increment
        coordinator.by_reference = {
            r: a for r, a in coordinator.by_reference.items() if a.number <= restored_to * increment
        }
        for n in range(issued - restored_to + later):
            before = journal.mark()
            answer = coordinator.allocate(f"new-{n}", "invoice")
            if answer.number <= highest:
                with pytest.raises(NumberWentBackwards):
                    journal.record_allocated(answer, before=before)
                assert journal.get("invoice", f"new-{n}") is None
            else:
                journal.record_allocated(answer, before=before)
