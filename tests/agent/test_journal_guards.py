"""Guards of the agent's journal that the mutation run (issue 17) found without a test."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from agent import Journal, JournalError, NumberWentBackwards
from tests.agent.test_journal_numbers import allocation


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.sqlite3") as j:
        yield j


def test_next_without_an_allocation_row_still_refuses_a_number_that_went_backwards(journal):
    """`invoice-sync-agent next` keeps no allocation row: it calls `receive`, which must run the
    same check as the poller's `record_allocated`, and remember the refusal."""
    journal.receive(allocation("10", 51), before=journal.mark())
    before = journal.mark()
    with pytest.raises(NumberWentBackwards) as refused:
        journal.receive(allocation("11", 50), before=before)
    assert (refused.value.number, refused.value.highest) == (50, 51)
    assert refused.value.highest_reference == "10"
    assert refused.value.message == (
        "the coordinator gave invoice 11 number INV-2026-000050 (50), but this installation "
        "already received INV-2026-000051 (51) for invoice 10 in invoice 2026: the "
        "coordinator's numbering went backwards (data lost or an old backup restored?). Not "
        "written anywhere. An admin must raise next_number of invoice above 51, void "
        "invoice:2026:50 with the reason and reissue it")
    # Answered again later, as a replay: still refused, with the same words.
    with pytest.raises(NumberWentBackwards) as again:
        journal.receive(allocation("11", 50, replay=True), before=journal.mark())
    assert again.value.message == refused.value.message
    journal.receive(allocation("12", 52), before=before)
    assert journal.highest("default", "invoice", "2026") == 52


def test_the_highest_number_of_a_sequence_never_received_is_none(journal):
    journal.receive(allocation("10", 51), before=journal.mark())
    assert journal.highest("default", "credit_note", "2026") is None
    assert journal.highest("default", "invoice", "2025") is None


def test_each_step_of_an_entry_records_when_it_happened(tmp_path: Path):
    now = [dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)]
    with Journal(tmp_path / "journal.sqlite3", clock=lambda: now[0]) as journal:
        a = allocation("10", 51)
        assert journal.record_allocated(a).updated_at == "2026-11-21T10:00:00Z"
        now[0] += dt.timedelta(minutes=5)
        written = journal.mark_written(a.id, a.formatted)
        assert (written.created_at, written.updated_at) == (
            "2026-11-21T10:00:00Z", "2026-11-21T10:05:00Z")
        now[0] += dt.timedelta(minutes=5)
        assert journal.mark_written(a.id, a.formatted).updated_at == "2026-11-21T10:05:00Z"


def test_the_scan_mark_never_moves_back(journal):
    """Scans may settle out of order (two pollers, or a slow one): the mark keeps the highest
    invoice id settled, per scan; moving it back would make polls read settled invoices again."""
    assert journal.scan_mark("invoices") is None
    journal.set_scan_mark("invoices", 120)
    journal.set_scan_mark("invoices", 80)
    assert journal.scan_mark("invoices") == 120
    journal.set_scan_mark("invoices", 200)
    journal.set_scan_mark("drafts", 7)
    assert (journal.scan_mark("invoices"), journal.scan_mark("drafts")) == (200, 7)


def test_invoices_to_look_at_again_are_kept_with_why_until_settled(tmp_path: Path):
    """The poller's watch list: drafts that may be published and invoices left unnumbered are
    read again on later polls, oldest first, until they are settled (numbered, deleted)."""
    now = [dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)]
    with Journal(tmp_path / "journal.sqlite3", clock=lambda: now[0]) as journal:
        assert journal.watched() == {}
        journal.watch("12", "draft")
        now[0] += dt.timedelta(minutes=1)
        journal.watch(7, "unnumbered")  # WHMCS ids come as ints too: one reference either way
        now[0] += dt.timedelta(minutes=1)
        journal.watch("12", "unnumbered")  # published since: the reason changes, not its age
        assert list(journal.watched().items()) == [("12", "unnumbered"), ("7", "unnumbered")]
        journal.unwatch(7)
        assert journal.watched() == {"12": "unnumbered"}
        journal.unwatch("99")  # never watched: nothing to do
        journal.unwatch("12")
        assert journal.watched() == {}


def test_a_confirm_straight_from_allocated_records_the_invoicenum(journal):
    """The WHMCS hook writes the number and confirms in one go: the journal keeps what it
    wrote."""
    a = allocation("10", 51)
    journal.record_allocated(a)
    entry = journal.mark_confirmed(a.id, "INV-2026-000051")
    assert (entry.state, entry.invoicenum) == ("confirmed", "INV-2026-000051")


def test_an_error_is_kept_up_to_2000_characters(journal):
    a = allocation("10", 51)
    journal.record_allocated(a)
    message = "WHMCS said: " + "x" * 5000
    assert journal.record_error(a.id, message).last_error == message[:2000]
    with pytest.raises(JournalError) as missing:
        journal.record_error("invoice:2026:99", "boom")
    assert str(missing.value) == "allocation invoice:2026:99 is not in the journal"


def test_times_are_utc_whatever_the_machines_zone(tmp_path: Path, monkeypatch):
    """A clock in another zone, on a machine whose local zone is not UTC: the journal still
    writes UTC (`...Z`), so entries of one installation sort the same wherever it runs."""
    monkeypatch.setenv("TZ", "Europe/Rome")
    time.tzset()
    try:
        rome = dt.timezone(dt.timedelta(hours=1))
        clock = lambda: dt.datetime(2026, 11, 21, 11, 0, tzinfo=rome)  # noqa: E731
        with Journal(tmp_path / "journal.sqlite3", clock=clock) as journal:
            assert journal.record_allocated(allocation("10", 51)).created_at == (
                "2026-11-21T10:00:00Z")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_journal_in_a_directory_not_made_yet_is_created_with_its_parents(tmp_path: Path):
    path = tmp_path / "var" / "lib" / "invoice-sync" / "journal.sqlite3"
    with Journal(path) as journal:
        journal.record_allocated(allocation("10", 51))
    with Journal(path) as journal:
        assert journal.get("invoice", "10").number == 51


def test_a_writer_waits_for_another_process_and_each_commit_is_synced(journal):
    """The poller and the sidecar share the journal: a writer waits up to BUSY_TIMEOUT for the
    other's transaction (SQLite's default, 5 s, would fail a slow disk's commit), and each
    commit is synced (FULL), so an entry survives a power cut. Both are per connection."""
    db = journal._db
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
