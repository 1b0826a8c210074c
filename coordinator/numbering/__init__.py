"""Numbering: sequences, allocation, ledger and gaps.

The domain API other parts call (the agent-facing views, the forecaster's reconciliation)::

    allocate(client, system, document, reference, day, durability) -> (entry, new)
    get(client, allocation_id) -> entry
    transition(client, allocation_id, "confirm" | "void", value, ...) -> (entry, changed)
    list_ledger(client, sequence, period, after=0, limit=100) -> [entry, ...]
    iter_ledger(client, sequence, period=None) -> iterator of entries (all periods when None)
    gaps(client, sequence, period, grace_seconds) -> [gap, ...]
    describe(client, name) / update(client, name, changes, actor=...) / audit(client, name)
"""

from coordinator.numbering.allocation import allocate, get, parse_id, transition
from coordinator.numbering.ledger import gaps, iter_ledger, list_ledger, periods
from coordinator.numbering.scripts import Durability
from coordinator.numbering.sequences import audit, describe, ensure_sequences, update

__all__ = [
    "Durability",
    "allocate",
    "audit",
    "describe",
    "ensure_sequences",
    "gaps",
    "get",
    "iter_ledger",
    "list_ledger",
    "parse_id",
    "periods",
    "transition",
    "update",
]
