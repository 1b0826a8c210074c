"""Numbering: series, sequences, allocation, ledger and gaps.

The domain API other parts call (the agent-facing views, the forecaster's reconciliation)::

    allocate(client, system, document, reference, day, durability, hints) -> (entry, new)
    get(client, allocation_id) -> entry
    transition(client, allocation_id, "confirm" | "void", value, ...) -> (entry, changed)
    reissue(client, allocation_id, reason, actor=...) -> (new entry, void entry)
    list_ledger(client, sequence, period, after=0, limit=100, series=...) -> [entry, ...]
    iter_ledger(client, sequence, period=None, series=...) -> iterator of entries
    gaps(client, sequence, period, grace_seconds, series=...) -> [gap, ...]
    describe / update / audit (client, name, ..., series=...)
    list_series / create_series / get_series / update_series / delete_series, join / leave
    ensure_layout(client) -> MigrationReport (moves data of the release before series)

Every ``series=`` defaults to ``default``, the series ``/v1/sequences/…`` serves.
"""

from coordinator.numbering.allocation import (
    Hints,
    allocate,
    get,
    parse_id,
    reissue,
    transition,
)
from coordinator.numbering.ledger import gaps, iter_ledger, list_ledger, periods
from coordinator.numbering.migrate import MigrationReport, ensure_layout
from coordinator.numbering.scripts import Durability
from coordinator.numbering.sequences import audit, describe, ensure_sequences, update
from coordinator.numbering.series import (
    create_series,
    delete_series,
    get_series,
    join,
    leave,
    list_series,
    series_of_system,
    update_series,
)

__all__ = [
    "Durability",
    "Hints",
    "MigrationReport",
    "allocate",
    "audit",
    "create_series",
    "delete_series",
    "describe",
    "ensure_layout",
    "ensure_sequences",
    "gaps",
    "get",
    "get_series",
    "iter_ledger",
    "join",
    "leave",
    "list_ledger",
    "list_series",
    "parse_id",
    "periods",
    "reissue",
    "series_of_system",
    "transition",
    "update",
    "update_series",
]
