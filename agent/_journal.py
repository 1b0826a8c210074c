"""The local journal: which numbers this installation took, and how far each one got.

The coordinator's ledger is the source of truth; the journal is the agent's memory between
runs, so a number taken but not yet written into WHMCS, or written but not yet confirmed, is
finished on the next run instead of forgotten. One row per (document, reference)::

    allocated ──► written ──► confirmed
        │            │
        └────────────┴──────► voided

``confirmed`` and ``voided`` are final. Confirming straight from ``allocated`` is allowed (the
WHMCS hook writes the number and confirms in one go; the confirm carries the invoicenum).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent._exceptions import JournalError
from agent._models import Allocation

BUSY_TIMEOUT = 30.0
"""Seconds a writer waits for another process's transaction before giving up."""

STATES = ("allocated", "written", "confirmed", "voided")
"""Journal states, in order of progress."""

_NEXT = {
    "allocated": {"written", "confirmed", "voided"},
    "written": {"confirmed", "voided"},
    "confirmed": set(),
    "voided": set(),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS allocations (
    document      TEXT NOT NULL,
    reference     TEXT NOT NULL,
    allocation_id TEXT NOT NULL UNIQUE,
    number        INTEGER NOT NULL,
    formatted     TEXT NOT NULL,
    state         TEXT NOT NULL
                  CHECK (state IN ('allocated', 'written', 'confirmed', 'voided')),
    invoicenum    TEXT,
    void_reason   TEXT,
    last_error    TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (document, reference)
);
CREATE INDEX IF NOT EXISTS allocations_state ON allocations (state, created_at);
"""

_COLUMNS = (
    "document, reference, allocation_id, number, formatted, state, invoicenum, "
    "void_reason, last_error, created_at, updated_at"
)


@dataclasses.dataclass(frozen=True)
class JournalEntry:
    """One row of the journal."""

    document: str
    reference: str
    allocation_id: str
    number: int
    formatted: str
    state: str
    invoicenum: str | None
    void_reason: str | None
    last_error: str | None
    created_at: str
    updated_at: str


class Journal:
    """An SQLite journal (WAL) that several processes and threads may share.

    ::

        with Journal(config.journal) as journal:
            journal.record_allocated(allocation)
            journal.mark_written(allocation.id, allocation.formatted)
            journal.mark_confirmed(allocation.id)
            for entry in journal.pending():      # next run: finish what was left
                ...

    Args:
        path: The database file (its directory is created, mode 0700; the file is 0600).
        clock: Returns "now" as an aware datetime (tests pass a fixed one).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                # Create it private before SQLite does (SQLite would follow the umask).
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
                check_same_thread=False,  # guarded by self._lock
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # The journal outlives crashes by design: FULL syncs each commit.
            self._db.execute("PRAGMA synchronous=FULL")
            with self._write() as db:
                # Not executescript(): it would COMMIT our BEGIN IMMEDIATE first.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Run a write transaction that takes the write lock up front (no upgrade deadlocks)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _now(self) -> str:
        return self._clock().astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    # -- reads -----------------------------------------------------------------------------

    def get(self, document: str, reference: str) -> JournalEntry | None:
        """Return the entry of one document, or None."""
        return self._one("document = ? AND reference = ?", (document, str(reference)))

    def by_id(self, allocation_id: str) -> JournalEntry | None:
        """Return the entry of one allocation id, or None."""
        return self._one("allocation_id = ?", (allocation_id,))

    def pending(self) -> list[JournalEntry]:
        """Return entries allocated or written but not yet confirmed or voided, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM allocations WHERE state IN ('allocated', 'written') "
                "ORDER BY created_at, document, reference"
            ).fetchall()
        return [JournalEntry(**dict(r)) for r in rows]

    def _one(self, where: str, params: tuple[str, ...]) -> JournalEntry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM allocations WHERE {where}", params
            ).fetchone()
        return JournalEntry(**dict(row)) if row else None

    # -- writes ----------------------------------------------------------------------------

    def record_allocated(self, allocation: Allocation) -> JournalEntry:
        """Remember a number the coordinator issued; a replay of the same one changes nothing.

        Raises:
            JournalError: The document already has a different, unvoided allocation (the
                coordinator promised one number per document; do not write either).
        """
        now = self._now()
        with self._write() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM allocations WHERE document = ? AND reference = ?",
                (allocation.document, allocation.reference),
            ).fetchone()
            if row is not None and row["allocation_id"] == allocation.id:
                return JournalEntry(**dict(row))
            if row is not None and row["state"] != "voided":
                raise JournalError(
                    f"{allocation.document} {allocation.reference!r} already holds allocation "
                    f"{row['allocation_id']} ({row['state']}); refusing {allocation.id}"
                )
            db.execute(
                "INSERT OR REPLACE INTO allocations (document, reference, allocation_id, "
                "number, formatted, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 'allocated', ?, ?)",
                (
                    allocation.document,
                    allocation.reference,
                    allocation.id,
                    allocation.number,
                    allocation.formatted,
                    now,
                    now,
                ),
            )
        entry = self.by_id(allocation.id)
        assert entry is not None
        return entry

    def mark_written(self, allocation_id: str, invoicenum: str) -> JournalEntry:
        """Record that ``invoicenum`` is now in WHMCS (not yet confirmed to the coordinator)."""
        return self._move(allocation_id, "written", invoicenum=invoicenum)

    def mark_confirmed(self, allocation_id: str, invoicenum: str | None = None) -> JournalEntry:
        """Record that the coordinator confirmed the allocation."""
        return self._move(allocation_id, "confirmed", invoicenum=invoicenum)

    def mark_voided(self, allocation_id: str, reason: str) -> JournalEntry:
        """Record that the coordinator voided the allocation, and why."""
        return self._move(allocation_id, "voided", void_reason=reason)

    def record_error(self, allocation_id: str, message: str) -> JournalEntry:
        """Keep the last thing that went wrong with an entry (state unchanged)."""
        with self._write() as db:
            self._require(db, allocation_id)
            db.execute(
                "UPDATE allocations SET last_error = ?, updated_at = ? WHERE allocation_id = ?",
                (message[:2000], self._now(), allocation_id),
            )
        return self._get_existing(allocation_id)

    def _move(self, allocation_id: str, state: str, **fields: str | None) -> JournalEntry:
        with self._write() as db:
            row = self._require(db, allocation_id)
            if row["state"] == state:
                return JournalEntry(**dict(row))  # idempotent: a retried step is fine
            if state not in _NEXT[row["state"]]:
                raise JournalError(
                    f"allocation {allocation_id} is {row['state']}; it cannot become {state}"
                )
            sets = {k: v for k, v in fields.items() if v is not None}
            sets.update(state=state, last_error=None, updated_at=self._now())
            assignments = ", ".join(f"{k} = ?" for k in sets)
            db.execute(
                f"UPDATE allocations SET {assignments} WHERE allocation_id = ?",
                (*sets.values(), allocation_id),
            )
        return self._get_existing(allocation_id)

    def _require(self, db: sqlite3.Connection, allocation_id: str) -> sqlite3.Row:
        row = db.execute(
            f"SELECT {_COLUMNS} FROM allocations WHERE allocation_id = ?", (allocation_id,)
        ).fetchone()
        if row is None:
            raise JournalError(f"allocation {allocation_id} is not in the journal")
        return row

    def _get_existing(self, allocation_id: str) -> JournalEntry:
        entry = self.by_id(allocation_id)
        if entry is None:  # pragma: no cover - rows are never deleted
            raise JournalError(f"allocation {allocation_id} vanished from the journal")
        return entry
