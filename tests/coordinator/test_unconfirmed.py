"""ops.unconfirmed: the metric's count of numbers unconfirmed past grace matches the ledger's own
gaps report, whatever happened in between, while each refresh reads a bounded number of entries."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import keys
from coordinator.numbering import allocation, ledger, pending, settled
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


def test_the_index_says_what_it_left_and_rechecks_the_oldest_first(redis_client):
    """A scan reads at most its budget and returns what is left of it and how many numbers
    wait; a recheck reads at most ``limit`` numbers, the oldest, and drops the numbers
    confirmed and settled out of the ledger's hash since they were seen issued. In a series
    of its own: each series has its own index (and nothing in ``default`` to fall back on)."""
    _in_series(redis_client, "acme-us", "red")
    entries = [allocation.allocate(redis_client, "red", "invoice", str(r), DAY)[0]
               for r in range(4)]
    args = (redis_client, "acme-us", "invoice", "2026")
    assert pending.scan(*args, 1) == (0, 3)
    assert pending.scan(*args, 4) == (1, 0)
    cutoff = later(GRACE).timestamp()
    assert [number for number, _ in pending.recheck(*args, cutoff, 2)] == ["1", "2"]
    for entry in entries[:2]:
        allocation.transition(redis_client, entry["id"], "confirm", entry["formatted"],
                              actor_kind="agent", actor_system="red", actor="agent:red")
    assert settled.settle(redis_client, "invoice", "2026", later(GRACE), series="acme-us",
                          block=2, keep=1, after_seconds=0) == 2
    assert redis_client.hmget(keys.seq_ledger("invoice", "2026", "acme-us"),
                              ["1", "2"]) == [None, None]
    assert [number for number, _ in pending.recheck(*args, cutoff, None)] == ["3", "4"]
    assert redis_client.zrange(keys.seq_unconfirmed("invoice", "2026", "acme-us"),
                               0, -1) == ["3", "4"]


def test_each_sequence_and_period_is_scanned_from_its_own_cursor(redis_client):
    """Credit notes and invoices, and each year, are numbered apart: a number of one is not
    passed over because another already reached it."""
    for reference, (document, day) in enumerate([("invoice", DAY), ("invoice", DAY),
                                                 ("credit_note", DAY),
                                                 ("invoice", dt.date(2025, 12, 30))]):
        allocation.allocate(redis_client, "blue", document, str(reference), day)
    assert unconfirmed.refresh(redis_client, GRACE, now=later(GRACE + 60)) == {
        "invoice": 3, "credit_note": 1}


def test_issue_times_are_utc_whatever_the_servers_time_zone(redis_client, monkeypatch):
    """A coordinator on a server set to Tokyo time does not count a number issued now as
    issued nine hours ago (past the grace time)."""
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    try:
        assert unconfirmed.refresh(redis_client, GRACE)["invoice"] == 0
        assert unconfirmed.refresh(redis_client, GRACE, now=later(GRACE + 60))["invoice"] == 1
    finally:
        monkeypatch.undo()
        time.tzset()


def _in_series(redis_client, series: str, system: str) -> None:
    """Make ``series`` number ``system`` (what registering it there does, without HTTP)."""
    from coordinator.numbering import series as series_mod

    series_mod.create_series(redis_client, series)
    series_mod.prepare_registration(redis_client, series, system)
    redis_client.hset(keys.system(system), mapping={"name": system, "series": series})
    series_mod.join(redis_client, series, system)


def test_regression_every_series_is_counted_not_only_default(redis_client):
    """Before: only ``default`` was looked at, so another legal entity's forgotten numbers
    were never counted nor warned about."""
    _in_series(redis_client, "acme-us", "red")
    hints = allocation.Hints()
    red = [allocation.allocate(redis_client, "red", "invoice", str(r), DAY, None, hints)[0]
           for r in range(3)]
    allocation.allocate(redis_client, "blue", "invoice", "b-1", DAY)
    assert red[0]["id"] == "acme-us/invoice:2026:1"
    when = later(GRACE + 60)
    found = unconfirmed.refresh_all(redis_client, GRACE, now=when)
    assert found[("acme-us", "invoice")] == unconfirmed.Pending(
        3, 0, ("acme-us/invoice:2026:1", "acme-us/invoice:2026:2", "acme-us/invoice:2026:3"))
    assert found[("default", "invoice")].count == 1
    assert found[("acme-us", "credit_note")].count == 0
    # The default series' answer is unchanged for its callers.
    assert unconfirmed.refresh(redis_client, GRACE, now=when) == {"invoice": 1,
                                                                  "credit_note": 0}
    assert unconfirmed.refresh(redis_client, GRACE, now=when, series="acme-us")["invoice"] == 3


def test_the_scheduler_warns_per_series_once_per_interval(redis_client):
    from coordinator.warnings import store

    _in_series(redis_client, "acme-us", "red")
    entry = allocation.allocate(redis_client, "red", "invoice", "1", DAY)[0]
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    config = {"UNCONFIRMED_GRACE_SECONDS": GRACE, "UNCONFIRMED_CHECK_SECONDS": 3600}
    assert unconfirmed.warn(redis_client, config) == []  # within the grace time: nothing
    redis_client.delete(keys.UNCONFIRMED_CHECK)
    when = later(GRACE + 60)
    raised = unconfirmed.warn(redis_client, config, now=when)
    assert raised == ["unconfirmed_numbers:acme-us/invoice", "unconfirmed_numbers:default/invoice"]
    warning = store.get(redis_client, raised[0])
    assert warning["type"] == "unconfirmed_numbers" and warning["count"] == 1
    assert warning["message"] == (
        "1 invoice number(s) of series 'acme-us' issued more than 3600 s ago are neither "
        "confirmed nor voided (oldest: acme-us/invoice:2026:1): WHMCS may never have received "
        "them. See GET /v1/series/acme-us/sequences/invoice/gaps; confirm or void each")
    # Another scheduler in the same interval does not look again.
    assert unconfirmed.warn(redis_client, config, now=when) == []
    # Once settled, the next look raises nothing for it.
    allocation.transition(redis_client, entry["id"], "void", "never sent", actor_kind="admin",
                          actor_system=None, actor="admin:test")
    redis_client.delete(keys.UNCONFIRMED_CHECK)
    assert unconfirmed.warn(redis_client, config, now=when) == [
        "unconfirmed_numbers:default/invoice"]
    assert unconfirmed.warn(redis_client, {**config, "UNCONFIRMED_CHECK_SECONDS": 0},
                            now=when) == []


def test_metrics_carry_each_series_as_a_label(redis_client, app_config):
    from coordinator.app import create_app

    _in_series(redis_client, "acme-us", "red")
    allocation.allocate(redis_client, "red", "invoice", "1", DAY)
    app = create_app({**app_config, "UNCONFIRMED_GRACE_SECONDS": 0})
    scrape = app.test_client().get("/metrics").get_data(as_text=True)
    assert ('invoice_sync_unconfirmed_past_grace{sequence="invoice",series="acme-us"} 1.0'
            in scrape)
    assert ('invoice_sync_unconfirmed_past_grace{sequence="invoice",series="default"} 0.0'
            in scrape)
    assert 'invoice_sync_unconfirmed_backlog{sequence="credit_note",series="acme-us"} 0.0' in scrape
