"""The journal's write transaction (``Journal._write``): hand-written mutations of issue 17.

The poller's threads and the sidecar share one journal connection per process; each write
runs alone, start to end, and either all of it is kept or none of it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent import Journal


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.sqlite3") as j:
        yield j


def test_a_thread_writes_only_after_another_threads_transaction_ends(journal):
    """Two threads on one connection: the second's write waits for the first's COMMIT
    instead of starting inside it (SQLite would refuse, or mix the two)."""
    errors: list[BaseException] = []

    def second_writer() -> None:
        try:
            journal.watch("2", "draft")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=second_writer)
    with journal._write() as db:
        db.execute("INSERT INTO watch (reference, reason, since) VALUES ('1', 'unnumbered', "
                   "'2026-01-01T00:00:00Z')")
        thread.start()
        # Correct code: the second writer is blocked on the journal until this block ends,
        # however long we wait here; without the lock it fails (or writes) at once.
        thread.join(0.5)
        assert thread.is_alive(), errors
    thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert journal.watched() == {"1": "unnumbered", "2": "draft"}
