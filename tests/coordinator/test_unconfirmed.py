"""ops.unconfirmed: the metric's count of numbers unconfirmed past grace matches the ledger's own
gaps report, whatever happened in between, while each refresh reads a bounded number of entries."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import keys
from coordinator.numbering import allocation, ledger
from coordinator.ops import unconfirmed
from tests.support import initialise_numbering

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 21)
GRACE = 3600


def later(seconds: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def oracle(client, when: dt.datetime) -> int:
    return sum(1 for gap in ledger.gaps(client, "invoice", "2026", GRACE, now=when)
               if gap["kind"] == "unconfirmed")


operations = st.lists(st.one_of(
    st.just(("allocate",)),
    st.tuples(st.just("confirm"), st.integers(0, 30)),
    st.tuples(st.just("void"), st.integers(0, 30)),
    st.just(("refresh",)),
), max_size=30)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_count_matches_the_gaps_report_whatever_happened(redis_client, ops):
    redis_client.flushall()
    initialise_numbering(redis_client)  # each example is a fresh store, as serve starts it
    ids: list[str] = []
    for op in ops:
        if op[0] == "allocate":
            entry, _ = allocation.allocate(redis_client, "blue", "invoice", str(len(ids)), DAY)
            ids.append(entry["id"])
        elif op[0] == "refresh":
            assert unconfirmed.refresh(redis_client, GRACE)["invoice"] == 0  # none past grace
        elif ids:
            target = ids[op[1] % len(ids)]
            current = allocation.get(redis_client, target)
            if op[0] == "confirm" and current["status"] == "void":
                continue  # refused (409): a voided number stays void
            if op[0] == "confirm":
                allocation.transition(redis_client, target, "confirm", current["formatted"],
                                      actor_kind="agent", actor_system="blue", actor="agent:blue")
            else:
                allocation.transition(redis_client, target, "void", "test",
                                      actor_kind="admin", actor_system=None, actor="admin:test")
    when = later(GRACE + 60)
    assert unconfirmed.refresh(redis_client, GRACE, now=when)["invoice"] == oracle(redis_client,
                                                                                    when)


def test_each_refresh_reads_a_bounded_number_of_entries(redis_client, monkeypatch):
    for reference in range(25):
        allocation.allocate(redis_client, "blue", "invoice", str(reference), DAY)
    monkeypatch.setattr(unconfirmed, "SCAN_BUDGET", 10)
    read = []
    original = ledger.list_ledger
    monkeypatch.setattr(ledger, "list_ledger", lambda *a, **k: read.append(
        len(result := original(*a, **k))) or result)
    when = later(GRACE + 60)
    found = []
    for _ in range(4):
        read.clear()
        found.append(unconfirmed.refresh_with_backlog(redis_client, GRACE, now=when)["invoice"])
        assert sum(read) <= 10
    # The index catches up over scrapes (10, 20, then all 25) and says how far behind it is.
    assert found == [(10, 15), (20, 5), (25, 0), (25, 0)] and oracle(redis_client, when) == 25


def test_settled_numbers_leave_the_index(redis_client):
    entries = [allocation.allocate(redis_client, "blue", "invoice", str(r), DAY)[0]
               for r in range(3)]
    assert unconfirmed.refresh(redis_client, GRACE)["invoice"] == 0
    allocation.transition(redis_client, entries[0]["id"], "confirm", entries[0]["formatted"],
                          actor_kind="agent", actor_system="blue", actor="agent:blue")
    when = later(GRACE + 60)
    assert unconfirmed.refresh(redis_client, GRACE, now=when)["invoice"] == 2
    assert redis_client.zcard(keys.seq_unconfirmed("invoice", "2026")) == 2
