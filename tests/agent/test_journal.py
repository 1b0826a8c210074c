"""The journal: state transitions, pending work, and two processes writing at once."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent import Allocation, Journal, JournalError


def allocation(reference: str, number: int, document: str = "invoice") -> Allocation:
    return Allocation.from_json(
        {
            "id": f"{document}:2026:{number}",
            "number": number,
            "formatted": f"INV-2026-{number:06d}",
            "sequence": document,
            "period": "2026",
            "system": "blue",
            "document": document,
            "reference": reference,
            "status": "issued",
            "issued_at": "2026-11-21T10:15:02Z",
        }
    )


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "state" / "journal.sqlite3") as j:
        yield j


def test_file_is_private_and_in_wal_mode(journal: Journal) -> None:
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(journal.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_happy_path_allocated_written_confirmed(journal: Journal) -> None:
    a = allocation("10234", 51)
    entry = journal.record_allocated(a)
    assert (entry.state, entry.allocation_id, entry.formatted) == ("allocated", a.id, a.formatted)
    assert journal.pending() == [entry]
    written = journal.mark_written(a.id, a.formatted)
    assert (written.state, written.invoicenum) == ("written", a.formatted)
    assert [e.state for e in journal.pending()] == ["written"]
    confirmed = journal.mark_confirmed(a.id)
    assert confirmed.state == "confirmed" and confirmed.invoicenum == a.formatted
    assert journal.pending() == []
    assert journal.get("invoice", "10234") == confirmed


def test_replays_and_repeated_steps_are_idempotent(journal: Journal) -> None:
    a = allocation("1", 1)
    first = journal.record_allocated(a)
    assert journal.record_allocated(a) == first
    journal.mark_confirmed(a.id, a.formatted)
    assert journal.mark_confirmed(a.id).state == "confirmed"
    assert journal.record_allocated(a).state == "confirmed"  # a late replay changes nothing


def test_impossible_transitions_are_refused(journal: Journal) -> None:
    a, b = allocation("1", 1), allocation("2", 2)
    journal.record_allocated(a)
    journal.record_allocated(b)
    journal.mark_confirmed(a.id, a.formatted)
    with pytest.raises(JournalError, match="confirmed"):
        journal.mark_voided(a.id, "too late")
    with pytest.raises(JournalError, match="confirmed"):
        journal.mark_written(a.id, "X")
    journal.mark_voided(b.id, "invoice deleted")
    with pytest.raises(JournalError):
        journal.mark_confirmed(b.id)
    with pytest.raises(JournalError, match="not in the journal"):
        journal.mark_written("invoice:2026:404", "X")


def test_a_second_allocation_for_the_same_document_is_refused(journal: Journal) -> None:
    journal.record_allocated(allocation("1", 1))
    with pytest.raises(JournalError, match="already holds"):
        journal.record_allocated(allocation("1", 2))
    assert journal.get("invoice", "1").allocation_id == "invoice:2026:1"


def test_a_voided_document_may_be_numbered_again(journal: Journal) -> None:
    journal.record_allocated(allocation("1", 1))
    journal.mark_voided("invoice:2026:1", "number lost in a crash")
    entry = journal.record_allocated(allocation("1", 2))
    assert (entry.allocation_id, entry.state) == ("invoice:2026:2", "allocated")


def test_documents_of_both_kinds_share_references(journal: Journal) -> None:
    journal.record_allocated(allocation("5", 5, "invoice"))
    journal.record_allocated(allocation("5", 5, "credit_note"))
    assert {e.document for e in journal.pending()} == {"invoice", "credit_note"}


def test_errors_are_kept_and_cleared_by_progress(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
    with Journal(tmp_path / "j.sqlite3", clock=lambda: now) as journal:
        a = allocation("1", 1)
        journal.record_allocated(a)
        entry = journal.record_error(a.id, "WHMCS said: Invalid IP 203.0.113.7")
        assert entry.last_error.startswith("WHMCS said") and entry.state == "allocated"
        assert entry.updated_at == "2026-11-21T10:00:00Z"
        assert journal.mark_written(a.id, a.formatted).last_error is None


def test_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as journal:
        journal.record_allocated(allocation("1", 1))
    with Journal(path) as journal:
        assert [e.reference for e in journal.pending()] == ["1"]


def test_unopenable_path_is_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(JournalError, match="cannot open"):
        Journal(tmp_path / "file" / "j.sqlite3")


WORKER = textwrap.dedent(
    """
    import sys
    from agent import Allocation, Journal

    path, offset, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with Journal(path) as journal:
        for n in range(offset, offset + count):
            a = Allocation.from_json({
                "id": f"invoice:2026:{n}", "number": n, "formatted": f"INV-{n}",
                "sequence": "invoice", "period": "2026", "system": "blue",
                "document": "invoice", "reference": str(n), "status": "issued",
                "issued_at": "2026-11-21T10:15:02Z",
            })
            journal.record_allocated(a)
            journal.mark_written(a.id, a.formatted)
            if n % 2:
                journal.mark_confirmed(a.id)
            # both processes also replay one shared document all the time
            journal.record_allocated(Allocation.from_json({**a.raw, "id": "invoice:2026:0",
                "number": 0, "formatted": "INV-0", "reference": "shared"}))
    """
)


def test_two_processes_write_at_once_without_losing_anything(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    Journal(path).close()  # create it once, so both workers race on rows, not on setup
    count = 150
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(offset), str(count)])
        for offset in (1, 1001)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    with Journal(path) as journal:
        pending = journal.pending()
        expected_pending = {str(n) for o in (1, 1001) for n in range(o, o + count) if n % 2 == 0}
        assert {e.reference for e in pending} == expected_pending | {"shared"}
        assert all(e.state == "written" for e in pending if e.reference != "shared")
        for o in (1, 1001):
            for n in range(o, o + count):
                entry = journal.get("invoice", str(n))
                assert entry is not None and entry.invoicenum == f"INV-{n}"
