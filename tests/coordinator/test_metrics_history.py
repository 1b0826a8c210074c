"""A /metrics scrape costs the same whatever the ledger's history (issue 13).

Counted on the real Valkey, not timed: the commands one scrape issues (per command, Lua's
inner calls included, from ``INFO commandstats``) and the bytes Valkey sends the coordinator's
connections (``tot-net-out`` of ``CLIENT LIST``), with 10 numbers in the ledger and with
10,000, once the unconfirmed-number index has caught up and after the same few new numbers.
"""

from __future__ import annotations

from datetime import date

import pytest

from coordinator.numbering import allocation
from coordinator.numbering.allocation import Hints, Item
from tests.coordinator import redis_counting
from tests.support import initialise_numbering

pytestmark = pytest.mark.integration

NEW = 3
"""Numbers taken between the warm-up scrapes and the measured one, at both sizes."""


def _fill(redis_client, count: int) -> None:
    hints = Hints()
    for start in range(0, count, 1000):
        allocation.allocate_batch(redis_client, "blue", [
            Item("invoice", f"h{i}", date(2026, 3, 1))
            for i in range(start, min(count, start + 1000))], hints=hints)


def _scrape_cost(client, redis_client) -> tuple[dict[str, int], int, int]:
    redis_client.config_resetstat()
    before = redis_counting.others(redis_client)
    response = client.get("/metrics")
    assert response.status_code == 200
    commands, sent = redis_counting.since(redis_client, before)
    stats = redis_client.info("commandstats")
    per_command = {name: int(value["calls"]) for name, value in stats.items()
                   if name not in ("cmdstat_config|resetstat", "cmdstat_client|list",
                                   "cmdstat_client|id")}
    return per_command, commands, sent


def _backlog(text: str) -> int:
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("invoice_sync_unconfirmed_backlog{"))


def _cost_at(client, redis_client, history: int):
    redis_client.flushall()
    initialise_numbering(redis_client)
    _fill(redis_client, history)
    for _ in range(10):  # the index reads a bounded slice of new numbers per scrape
        if _backlog(client.get("/metrics").get_data(as_text=True)) == 0:
            break
    else:
        pytest.fail("the unconfirmed-number index did not catch up in 10 scrapes")
    for i in range(NEW):
        allocation.allocate(redis_client, "blue", "invoice", f"new{i}", date(2026, 3, 1))
    return _scrape_cost(client, redis_client)


def test_a_scrape_issues_the_same_commands_and_reads_the_same_bytes_at_10_and_10000_numbers(
        client, redis_client):
    small = _cost_at(client, redis_client, 10)
    large = _cost_at(client, redis_client, 10_000)
    assert redis_client.zcard("{ser:default}:invoice:ledger-order:2026") == 10_000 + NEW
    per_command_small, commands_small, sent_small = small
    per_command_large, commands_large, sent_large = large
    assert commands_small > 0 and sent_small > 0  # the counting sees the scrape at all
    assert per_command_large == per_command_small
    assert commands_large == commands_small
    # Equal but for the width of the counts in the replies (e.g. "13" against "10003"); the
    # 10,000 entries themselves are some megabytes.
    assert abs(sent_large - sent_small) <= 256, (sent_small, sent_large)


def _warnings_gauge(text: str) -> dict[str, float]:
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("invoice_sync_warnings_open{")}


def test_the_open_warnings_gauge_costs_the_same_at_3_and_300_warnings(client, redis_client):
    """The gauge counts a set per type (SCARD), not every warning; counts stay right through
    acknowledgements and recurrences, and a previous release's warnings are counted too."""
    from coordinator import keys
    from coordinator.warnings import store as warnings

    costs = {}
    for total in (3, 300):
        redis_client.flushall()
        initialise_numbering(redis_client)
        for i in range(total):
            warnings.raise_warning(redis_client, warnings.SYNC_FAILED, "m", system=f"s{i}")
        warnings.raise_warning(redis_client, warnings.DUPLICATE_NUMBER, "m", system="s0")
        warnings.ack(redis_client, "sync_failed:s1")
        warnings.ack(redis_client, "sync_failed:s2")
        warnings.raise_warning(redis_client, warnings.SYNC_FAILED, "again", system="s2")
        client.get("/metrics")  # warm-up: first-request work aside
        per_command, _, _ = _scrape_cost(client, redis_client)
        costs[total] = per_command
        gauge = _warnings_gauge(client.get("/metrics").get_data(as_text=True))
        assert gauge["sync_failed"] == total - 1 and gauge["duplicate_number"] == 1
        # A store of the previous release: warnings without the open sets, indexed once.
        redis_client.delete(keys.WARNINGS_OPEN_INDEXED, keys.WARNINGS_OPEN_TYPES,
                            keys.warnings_open("sync_failed"),
                            keys.warnings_open("duplicate_number"))
        assert warnings.index_open(redis_client) == total
        assert warnings.unacked_by_type(redis_client) == {"sync_failed": total - 1,
                                                          "duplicate_number": 1}
    assert costs[3] == costs[300]
