"""The guards against numbering from a store that may be behind reality (real server)."""

from __future__ import annotations

from datetime import date

import pytest

from coordinator.exceptions import NumberingBehind, NumberingNotInitialised
from coordinator.numbering import allocation, guard, sequences

pytestmark = pytest.mark.integration

DAY = date(2026, 5, 5)


def test_an_empty_store_refuses_to_number_until_initialised(redis_client):
    redis_client.flushall()  # the fixture initialises the default series; this is a lost store
    with pytest.raises(NumberingNotInitialised, match="not initialised"):
        allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    assert redis_client.hlen("{seq:invoice}:ledger:2026") == 0
    sequences.update(redis_client, "invoice", {"next_number": 1}, actor="admin")
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    assert new and entry["number"] == 1


def test_a_store_that_issued_numbers_before_the_guard_is_initialised(redis_client):
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    for name in ("invoice", "credit_note"):
        redis_client.hdel(guard.keys.seq_guard(name), guard.INITIALISED)
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "2", DAY)
    assert new and entry["number"] == 2


def test_a_whmcs_number_above_the_counter_stops_its_period_until_next_number_passes_it(
        redis_client):
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    ahead = guard.check_synced_numbers(redis_client, "red",
                                       ["INV-2026-000001", "INV-2026-000007", "other-9"])
    assert [(a["period"], a["number"], a["formatted"]) for a in ahead] == [
        ("2026", 7, "INV-2026-000007")]
    with pytest.raises(NumberingBehind, match="INV-2026-000007"):
        allocation.allocate(redis_client, "blue", "invoice", "2", DAY)
    # The replay of a number already taken still answers; another period still numbers.
    assert allocation.allocate(redis_client, "blue", "invoice", "1", DAY)[1] is False
    assert allocation.allocate(redis_client, "blue", "invoice", "y", date(2027, 1, 2))[1]
    sequences.update(redis_client, "invoice", {"next_number": 8}, actor="admin", period="2026")
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "2", DAY)
    assert new and entry["number"] == 8
