"""The auditor's export of one sequence's ledger: JSON lines or CSV, and reading it back.

Records, one per line (JSONL) or row (CSV ``kind,seq,prev,hash,data``):
``header`` (format, series, sequence, period, the hash rule), one ``event`` per chained event
(``seq``, ``prev``, ``hash``, ``event``), each signed ``checkpoint``, then for the period (every
period when none is given): each ledger ``entry``, each ``gap`` with its explanation, each
settings ``audit`` record; last ``end`` (event count, head).
Only events are chained; entries, gaps and audit records are what they looked like at export
and are checked against the events by a reader who wants to (each number's ``issued`` event).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from itertools import chain as concat
from typing import Any

import redis

from coordinator.numbering import chain, checkpoints, ledger, sequences
from coordinator.numbering.sequences import DEFAULT_SERIES

CSV_COLUMNS = ("kind", "seq", "prev", "hash", "data")


def records(
    client: redis.Redis, sequence: str, period: str | None, grace_seconds: int, *,
    series: str = DEFAULT_SERIES, signing: checkpoints.SigningKeys | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield every record of the export of ``sequence`` (``period``: its entries and gaps)."""
    def extra() -> Iterator[dict[str, Any]]:
        periods = [period] if period else ledger.periods(client, sequence, series=series)
        for each in periods:
            for entry in ledger.iter_ledger(client, sequence, each, series=series):
                yield {"kind": "entry", "entry": entry}
            for gap in ledger.gaps(client, sequence, each, grace_seconds, series=series,
                                   full=True):
                yield {"kind": "gap", "period": each, "gap": gap}
        for record in sequences.audit(client, sequence, 1_000_000, series=series):
            yield {"kind": "audit", "audit": record}

    events = chain.export_records(client, sequence, period, series=series, signing=signing)
    for record in events:
        if record["kind"] == "end":
            yield from extra()
        yield record


def jsonl(found: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Encode records as JSON lines."""
    for record in found:
        yield json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


def csv_rows(found: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Encode records as CSV rows, header row first; ``data`` holds the rest as JSON."""
    for record in concat([None], found):
        buffer = io.StringIO()
        if record is None:
            csv.writer(buffer).writerow(CSV_COLUMNS)
        else:
            kind = record["kind"]
            data = record.get("event") if kind == "event" else {
                k: v for k, v in record.items() if k != "kind"}
            csv.writer(buffer).writerow([
                kind, record.get("seq", ""), record.get("prev", ""), record.get("hash") or "",
                json.dumps(data, sort_keys=True, ensure_ascii=False)])
        yield buffer.getvalue()


def read(text: str) -> Iterator[dict[str, Any]]:
    """Parse an export (JSONL or CSV, told apart by the first character) back into records.

    Raises:
        ValueError: a line or row that is not a record.
    """
    if text.startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"line {number} is not a record (a JSON object)")
                yield record
        return
    rows = csv.reader(io.StringIO(text))
    if tuple(next(rows, ())) != CSV_COLUMNS:
        raise ValueError("neither JSON lines nor a CSV export (header row missing)")
    for kind, seq, prev, hash_, data in rows:
        payload = json.loads(data)
        if kind == "event":
            yield {"kind": kind, "seq": int(seq), "prev": prev, "hash": hash_ or None,
                   "event": payload}
        else:
            yield {"kind": kind, **payload}


def verify_text(text: str, public_keys: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify an export's text offline (no Redis): see :func:`chain.check_export`."""
    try:
        return chain.check_export(read(text), public_keys)
    except (ValueError, TypeError) as error:
        return {"ok": False, "events": 0, "first_bad": {"reason": f"unreadable: {error}"}}
