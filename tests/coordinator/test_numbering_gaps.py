"""The gap report reads the gaps, not the history: on a real Valkey it answers exactly what a
walk of the whole period answers, whatever happened, with a number of Redis commands that does
not grow with the numbers issued."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import keys
from coordinator.numbering import allocation, ledger, sequences
from tests.support import initialise_numbering

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 21)
GRACE = 3600


def later(seconds: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def both(client, when):
    """The indexed report and the full walk, at ``when``."""
    return (ledger.gaps(client, "invoice", "2026", GRACE, now=when),
            ledger.gaps(client, "invoice", "2026", GRACE, now=when, full=True))


def act(client, ids, op):
    kind = op[0]
    if kind == "allocate":
        entry, _ = allocation.allocate(client, "blue", "invoice", f"r{len(ids)}", DAY)
        ids.append(entry["id"])
    elif kind == "raise":
        current = int(client.get(keys.seq_counter("invoice", "2026")) or 0) + 1
        sequences.update(client, "invoice", {"next_number": current + op[1]}, actor="admin:t",
                         period="2026")
    elif ids:
        target = ids[op[1] % len(ids)]
        entry = allocation.get(client, target)
        if kind == "confirm" and entry["status"] == "issued":
            allocation.transition(client, target, "confirm", entry["formatted"],
                                  actor_kind="agent", actor_system="blue", actor="agent:blue")
        elif kind == "void" and entry["status"] != "void":
            allocation.transition(client, target, "void", "test", actor_kind="admin",
                                  actor_system=None, actor="admin:t")
        elif kind == "reissue" and entry["status"] == "void" and "reissued_as" not in entry:
            new, _ = allocation.reissue(client, target, "by mistake", actor="admin:t")
            ids.append(new["id"])


operations = st.lists(st.one_of(
    st.just(("allocate",)), st.tuples(st.just("raise"), st.integers(1, 3)),
    st.tuples(st.sampled_from(["confirm", "void", "reissue"]), st.integers(0, 40)),
    st.just(("report",)),
), max_size=40)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_the_indexed_report_equals_the_walk_whatever_happened(redis_client, ops):
    """Property: voids, skips, unconfirmed numbers, reissues, in any order, and reports asked
    in between (which move the pending index): both reports agree, now and past the grace."""
    redis_client.flushall()
    initialise_numbering(redis_client)  # a fresh store, as serve's first start leaves it
    ids: list[str] = []
    for op in ops:
        if op[0] == "report":
            indexed, walked = both(redis_client, later(0))
            assert indexed == walked
        else:
            act(redis_client, ids, op)
    for when in (later(0), later(GRACE + 60)):
        indexed, walked = both(redis_client, when)
        assert indexed == walked


def test_voids_made_before_the_index_existed_are_found_once(redis_client):
    """Upgraded data: the void index is filled by one walk of the period, then kept."""
    entries = [allocation.allocate(redis_client, "blue", "invoice", str(r), DAY)[0]
               for r in range(3)]
    allocation.transition(redis_client, entries[1]["id"], "void", "old void",
                          actor_kind="admin", actor_system=None, actor="admin:t")
    # What the release before this one left: the void without its index entry.
    redis_client.delete(keys.seq_voids("invoice", "2026"))
    when = later(0)
    found = ledger.gaps(redis_client, "invoice", "2026", GRACE, now=when)
    assert [(g["kind"], g["number"]) for g in found] == [("void", 2)]
    assert redis_client.get(keys.seq_gap_index("invoice", "2026")) == "1"
    assert redis_client.zrange(keys.seq_voids("invoice", "2026"), 0, -1) == ["2"]


def test_lost_data_still_shows_through_the_counts(redis_client):
    for r in range(4):
        allocation.allocate(redis_client, "blue", "invoice", str(r), DAY)
    ledger.gaps(redis_client, "invoice", "2026", GRACE)  # index built
    redis_client.hdel(keys.seq_ledger("invoice", "2026"), "2")
    redis_client.zrem(keys.seq_ledger_order("invoice", "2026"), "2")
    found = ledger.gaps(redis_client, "invoice", "2026", 10**9)
    assert found == [{"kind": "missing", "after": 1, "before": 3}]
    # And a number taken from the counter whose entry never came: missing at the end.
    redis_client.incr(keys.seq_counter("invoice", "2026"))
    redis_client.hincrby(keys.seq_stats("invoice"), "issued", -1)  # counts agree again
    assert ledger.gaps(redis_client, "invoice", "2026", 10**9) == [
        {"kind": "missing", "after": 4, "before": 6}]


def test_a_skip_in_a_series_counting_by_two_names_the_number_it_went_on_with(redis_client):
    """The skip's ``next`` is the next number issued, not the counter plus one."""
    sequences.update(redis_client, "invoice", {"increment": 2}, actor="admin:t", period="2026")
    first, _ = allocation.allocate(redis_client, "blue", "invoice", "a", DAY)
    sequences.update(redis_client, "invoice", {"next_number": first["number"] + 10},
                     actor="admin:t", period="2026")
    second, _ = allocation.allocate(redis_client, "blue", "invoice", "b", DAY)
    for each in both(redis_client, later(0)):
        assert [g for g in each if g["kind"] == "skipped"] == [
            {"kind": "skipped", "after": first["number"], "next": second["number"],
             "explanation": ledger.SKIP_EXPLANATION}]


def _commands(client) -> int:
    return sum(int(s["calls"]) for s in client.info("commandstats").values())


def _report_commands(client) -> int:
    ledger.gaps(client, "invoice", "2026", GRACE)  # the pending index catches up once
    before = _commands(client)
    ledger.gaps(client, "invoice", "2026", GRACE)
    return _commands(client) - before - 1  # the second INFO counts itself


def test_the_report_costs_the_same_commands_at_any_size(redis_client, monkeypatch):
    """Before: one ZRANGE and one HMGET per page (MAX_PAGE numbers) of the period, for ever.
    Pages of 50 here, so a few hundred numbers span as many pages as 100,000 would."""
    monkeypatch.setattr(ledger, "MAX_PAGE", 50)
    counts, taken, hints = [], 0, allocation.Hints()
    for size in (120, 360):
        for r in range(taken, size):
            entry, _ = allocation.allocate(redis_client, "blue", "invoice", str(r), DAY, None,
                                           hints)
            if r % 50 == 7:
                allocation.transition(redis_client, entry["id"], "void", "x",
                                      actor_kind="admin", actor_system=None, actor="admin:t")
        taken = size
        counts.append(_report_commands(redis_client))
        assert ledger.gaps(redis_client, "invoice", "2026", GRACE) == ledger.gaps(
            redis_client, "invoice", "2026", GRACE, full=True)
    assert counts[0] == counts[1], counts
