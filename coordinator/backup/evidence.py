"""Gather the numbers in use for ``invoice-sync recover``: the systems' WHMCS and agents' journals.

- **WHMCS**: a full sync of each system (its stored credentials, the forecaster's own paging
  and SSRF guard, under the system's sync lock), then every stored ``invoicenum`` with its
  invoice id as the reference. A system whose WHMCS cannot be read stops the recovery: a
  number it printed would otherwise be handed out again.
- **journals**: an agent's SQLite journal (``agent/_journal.py``), read only: every number it
  ``received`` (series, sequence, period and number as the coordinator answered them), or, in
  a journal older than that table, its allocations.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis

from coordinator.exceptions import CoordinatorError, RecoveryIncomplete
from coordinator.numbering.recover import Evidence

_ALLOCATION_ID = re.compile(r"(?:(?P<series>[^/]+)/)?(?P<sequence>[^:/]+):(?P<period>[^:]+):\d+")
"""API.md's allocation id, as a journal without ``received`` holds it."""


def from_whmcs(
    client: redis.Redis, system: str, config: Mapping[str, Any],
    resolve: Callable[..., tuple[Any, int]] | None = None,
) -> Iterator[Evidence]:
    """Run a full sync of ``system`` now, then yield every number its WHMCS shows.

    Raises:
        RecoveryIncomplete: a sync is running, or WHMCS could not be read completely.
    """
    from agent import WhmcsError
    from coordinator.forecaster import jobs, lock, store, sync

    owner = f"recover-{uuid.uuid4().hex[:12]}"
    if not lock.acquire_queued(client, system, owner):
        raise RecoveryIncomplete(f"a sync of {system} is queued or running; run recover again "
                            "when it finished")
    source = None
    try:
        with lock.HeldLock(client, system, owner) as held:
            source, step = (resolve or jobs.default_resolver)(client, system, config)
            sync.run(client, system, "full", source, step, check=held.check, owner=owner)
    except WhmcsError as error:
        raise RecoveryIncomplete(f"the WHMCS of {system} could not be read: {error.message}; "
                            "nothing was recovered") from None
    except (sync.SyncError, CoordinatorError) as error:
        raise RecoveryIncomplete(f"the WHMCS of {system} could not be read: {error.message}; "
                            "nothing was recovered") from None
    except lock.LockLost as error:
        raise RecoveryIncomplete(f"{error}; nothing was recovered") from None
    finally:
        if source is not None and hasattr(source, "close"):
            source.close()
    for invoice in store.iter_stored(client, system):
        if invoice.invoicenum:
            yield Evidence(system, invoice.invoicenum, f"whmcs:{system}",
                           reference=str(invoice.id))


def from_journal(path: Path, system: str) -> Iterator[Evidence]:
    """Yield every number the agent journal at ``path`` (of ``system``) received.

    Raises:
        RecoveryIncomplete: not a readable agent journal.
    """
    source = f"journal:{system}"
    try:
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise RecoveryIncomplete(f"{path} cannot be opened ({error})") from None
    try:
        tables = {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "received" in tables:
            rows = db.execute("SELECT series, sequence, period, number, formatted, document, "
                              "reference FROM received ORDER BY mark").fetchall()
        elif "allocations" in tables:
            rows = []
            for allocation_id, number, formatted, document, reference in db.execute(
                    "SELECT allocation_id, number, formatted, document, reference "
                    "FROM allocations"):
                match = _ALLOCATION_ID.fullmatch(allocation_id)
                if match is not None:
                    rows.append((match["series"] or "default", match["sequence"],
                                 match["period"], number, formatted, document, reference))
        else:
            raise RecoveryIncomplete(f"{path} is not an invoice-sync agent journal")
    except sqlite3.Error as error:
        raise RecoveryIncomplete(f"{path} is not a readable agent journal ({error})") from None
    finally:
        db.close()
    for series, sequence, period, number, formatted, document, reference in rows:
        yield Evidence(system, formatted, source, reference=str(reference),
                       document=document, series=series, sequence=sequence, period=period,
                       number=int(number))
