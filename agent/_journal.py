"""The local journal: which numbers this installation took, and how far each one got.

The coordinator's ledger is the source of truth; the journal is the agent's memory between
runs, so a number taken but not yet written into WHMCS, or written but not yet confirmed, is
finished on the next run instead of forgotten. One row per (document, reference)::

    allocated ──► written ──► confirmed
        │            │
        └────────────┴──────► voided

``confirmed`` and ``voided`` are final. Confirming straight from ``allocated`` is allowed (the
WHMCS hook writes the number and confirms in one go; the confirm carries the invoicenum).

Besides, the journal keeps:

* every number received (``received``), so a coordinator that numbers from lost or old data
  is caught: a *new* number at or below one this installation had already received for
  another document in the same series, sequence and period is refused
  (:class:`~agent.NumberWentBackwards`) before anyone writes it. Only numbers received
  before the request was sent count (``mark()`` before, ``before=`` after): the hook and the
  poller may record their answers in any order. Replays (the same document's same number)
  pass: the coordinator remembered that document.
* the poller's scan state: how far new invoices were read (per WHMCS and ``number_on``) and
  the invoices to look at again (drafts that may be published, invoices left unnumbered).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent._exceptions import JournalError, NumberWentBackwards
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
CREATE TABLE IF NOT EXISTS poll_state (
    name          TEXT PRIMARY KEY,
    value         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS watch (
    reference     TEXT PRIMARY KEY,
    reason        TEXT NOT NULL,
    since         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (
    series        TEXT NOT NULL,
    sequence      TEXT NOT NULL,
    period        TEXT NOT NULL,
    number        INTEGER NOT NULL,
    document      TEXT NOT NULL,
    reference     TEXT NOT NULL,
    message       TEXT NOT NULL,
    PRIMARY KEY (series, sequence, period, number, document, reference)
)
"""

_RECEIVED_SCHEMA = """
CREATE TABLE received (
    mark          INTEGER PRIMARY KEY AUTOINCREMENT,
    series        TEXT NOT NULL,
    sequence      TEXT NOT NULL,
    period        TEXT NOT NULL,
    number        INTEGER NOT NULL,
    formatted     TEXT NOT NULL,
    document      TEXT NOT NULL,
    reference     TEXT NOT NULL
);
CREATE INDEX received_numbers ON received (series, sequence, period, number)
"""

_ALLOCATION_ID = re.compile(r"(?:(?P<series>[^/]+)/)?(?P<sequence>[^:/]+):(?P<period>[^:]+):\d+")
"""API.md's allocation id: ``<sequence>:<period>:<number>``, ``<series>/`` first outside
``default``; used to fill ``received`` from a journal written by an older release."""

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
                self._create_received(db)
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

    @staticmethod
    def _create_received(db: sqlite3.Connection) -> None:
        """Create ``received``, filled from the allocations of a journal made before it."""
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'received'"
        ).fetchone()
        if exists:
            return
        for statement in _RECEIVED_SCHEMA.split(";"):
            db.execute(statement)
        rows = db.execute(
            "SELECT allocation_id, number, formatted, document, reference FROM allocations "
            "ORDER BY created_at"
        ).fetchall()
        for row in rows:
            match = _ALLOCATION_ID.fullmatch(row["allocation_id"])
            if match is None:
                continue
            db.execute(
                "INSERT INTO received (series, sequence, period, number, formatted, document, "
                "reference) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (match["series"] or "default", match["sequence"], match["period"],
                 row["number"], row["formatted"], row["document"], row["reference"]),
            )

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

    def mark(self) -> int:
        """Return the position of the last number received; take it before asking for one."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(mark), 0) FROM received").fetchone()
        return int(row[0])

    def receive(self, allocation: Allocation, *, before: int) -> None:
        """Check a number against those received before ``before`` and remember it.

        For callers that keep no allocation row (``invoice-sync-agent next``).

        Raises:
            NumberWentBackwards: A new number at or below one received earlier for another
                document of the same series, sequence and period.
        """
        with self._write() as db:
            refusal = self._receive(db, allocation, before)
        if refusal is not None:
            raise refusal

    def highest(self, series: str, sequence: str, period: str) -> int | None:
        """Return the highest number received for a sequence and period, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(number) FROM received WHERE series = ? AND sequence = ? "
                "AND period = ?",
                (series, sequence, period),
            ).fetchone()
        return None if row[0] is None else int(row[0])

    def _receive(
        self, db: sqlite3.Connection, allocation: Allocation, before: int | None
    ) -> NumberWentBackwards | None:
        """Remember the number, or the refusal (committed) that the caller then raises."""
        key = (allocation.series, allocation.sequence, allocation.period)
        mine = (allocation.number, allocation.document, allocation.reference)
        refused = db.execute(
            "SELECT message FROM refused WHERE series = ? AND sequence = ? AND period = ? "
            "AND number = ? AND document = ? AND reference = ?",
            (*key, *mine),
        ).fetchone()
        if refused is not None:
            # Refused before, now answered as a replay: still the same number, still refused.
            return self._refusal(refused["message"], allocation, None)
        if before is not None and allocation.replay is not True:
            # Any increment, any number of systems: a counter that only moves forward gives a
            # request sent after number N was received something above N.
            above = db.execute(
                "SELECT number, formatted, document, reference FROM received "
                "WHERE series = ? AND sequence = ? AND period = ? AND mark <= ? "
                "AND number >= ? AND NOT (document = ? AND reference = ?) "
                "ORDER BY number DESC LIMIT 1",
                (*key, before, *mine),
            ).fetchone()
            if above is not None:
                message = (
                    f"the coordinator gave {allocation.document} {allocation.reference} number "
                    f"{allocation.formatted} ({allocation.number}), but this installation "
                    f"already received {above['formatted']} ({above['number']}) for "
                    f"{above['document']} {above['reference']} in {allocation.sequence} "
                    f"{allocation.period}: the coordinator's numbering went backwards (data "
                    "lost or an old backup restored?). Not written anywhere. An admin must "
                    f"raise next_number of {allocation.sequence} above {above['number']}, "
                    f"void {allocation.id} with the reason and reissue it"
                )
                db.execute(
                    "INSERT OR IGNORE INTO refused (series, sequence, period, number, document, "
                    "reference, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, *mine, message),
                )
                return self._refusal(message, allocation, above)
        known = db.execute(
            "SELECT 1 FROM received WHERE series = ? AND sequence = ? AND period = ? "
            "AND number = ? AND document = ? AND reference = ?",
            (*key, *mine),
        ).fetchone()
        if known is None:
            db.execute(
                "INSERT INTO received (series, sequence, period, number, formatted, document, "
                "reference) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, allocation.number, allocation.formatted, allocation.document,
                 allocation.reference),
            )
        return None

    @staticmethod
    def _refusal(
        message: str, allocation: Allocation, above: sqlite3.Row | None
    ) -> NumberWentBackwards:
        return NumberWentBackwards(
            message,
            number=allocation.number,
            formatted=allocation.formatted,
            highest=int(above["number"]) if above else allocation.number,
            highest_formatted=str(above["formatted"]) if above else allocation.formatted,
            highest_reference=str(above["reference"]) if above else allocation.reference,
        )

    def record_allocated(
        self, allocation: Allocation, *, before: int | None = None
    ) -> JournalEntry:
        """Remember a number the coordinator issued; a replay of the same one changes nothing.

        Args:
            allocation: The coordinator's answer.
            before: :meth:`mark` taken before the request was sent: the number is then
                checked against those received earlier (see the module docstring).

        Raises:
            JournalError: The document already has a different, unvoided allocation (the
                coordinator promised one number per document; do not write either).
            NumberWentBackwards: See :meth:`receive`; nothing is recorded.
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
            refusal = self._receive(db, allocation, before)
            if refusal is None:
                db.execute(
                    "INSERT OR REPLACE INTO allocations (document, reference, allocation_id, "
                    "number, formatted, state, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 'allocated', ?, ?)",
                    (allocation.document, allocation.reference, allocation.id,
                     allocation.number, allocation.formatted, now, now),
                )
        if refusal is not None:
            raise refusal  # after the commit: the refusal is remembered, nothing else
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

    # -- the poller's scan state -------------------------------------------------------------

    def scan_mark(self, name: str) -> int | None:
        """Return the highest invoice id the scan ``name`` has settled, or None (never ran)."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM poll_state WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else int(row[0])

    def set_scan_mark(self, name: str, invoice_id: int) -> None:
        """Record that every invoice up to ``invoice_id`` was looked at (never moves back)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO poll_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO "
                "UPDATE SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (name, int(invoice_id)),
            )

    def watched(self) -> dict[str, str]:
        """Return the invoices to look at again, ``{reference: reason}``."""
        with self._lock:
            rows = self._db.execute("SELECT reference, reason FROM watch ORDER BY since").fetchall()
        return {r["reference"]: r["reason"] for r in rows}

    def watch(self, reference: str, reason: str) -> None:
        """Look at this invoice again on the next polls (``draft`` or ``unnumbered``)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO watch (reference, reason, since) VALUES (?, ?, ?) "
                "ON CONFLICT (reference) DO UPDATE SET reason = excluded.reason",
                (str(reference), reason, self._now()),
            )

    def unwatch(self, reference: str) -> None:
        """Stop looking at this invoice (numbered, deleted, or needing no number)."""
        with self._write() as db:
            db.execute("DELETE FROM watch WHERE reference = ?", (str(reference),))

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
