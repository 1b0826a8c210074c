"""The gap report reads the gaps, not the history: on a real Valkey it answers exactly what a
walk of the whole period answers, whatever happened, with a number of Redis commands that does
not grow with the numbers issued."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import keys
from coordinator.numbering import allocation, ledger, recover, sequences, settled
from coordinator.numbering import series as series_mod
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
    for full in (False, True):
        found = ledger.gaps(redis_client, "invoice", "2026", 10**9, full=full)
        assert found == [{"kind": "missing", "after": 1, "before": 3}], full
    # And a number taken from the counter whose entry never came: missing at the end (by the
    # counts; the walk places both holes).
    redis_client.incr(keys.seq_counter("invoice", "2026"))
    redis_client.hincrby(keys.seq_stats("invoice"), "issued", -1)  # counts agree again
    assert ledger.gaps(redis_client, "invoice", "2026", 10**9) == [
        {"kind": "missing", "after": 4, "before": 6}]
    assert ledger.gaps(redis_client, "invoice", "2026", 10**9, full=True) == [
        {"kind": "missing", "after": 1, "before": 3}, {"kind": "missing", "after": 4, "before": 6}]


def test_a_hole_shows_when_the_sequence_lost_its_count_of_issued_numbers_too(redis_client):
    """Lost data: numbers 1 and 2 and the sequence's stats (the count of issued numbers) are
    gone. With only one number left to count, the quick report still sees the counts disagree
    and places the hole, as the walk does."""
    for r in range(3):
        allocation.allocate(redis_client, "blue", "invoice", str(r), DAY)
    ledger.gaps(redis_client, "invoice", "2026", GRACE)  # index built
    redis_client.hdel(keys.seq_ledger("invoice", "2026"), "1", "2")
    redis_client.zrem(keys.seq_ledger_order("invoice", "2026"), "1", "2")
    redis_client.delete(keys.seq_stats("invoice"))
    for full in (False, True):
        assert ledger.gaps(redis_client, "invoice", "2026", 10**9, full=full) == [
            {"kind": "missing", "after": 0, "before": 3}], full


@pytest.mark.parametrize("series", ["default", "eu"])
def test_a_skip_in_a_series_counting_by_two_names_the_number_it_went_on_with(redis_client,
                                                                              series):
    """The skip's ``next`` is the next number issued, not the counter plus one; a raise with
    nothing issued after it yet is listed too. In any series (its own settings, counter)."""
    hints = _in_eu(redis_client) if series == "eu" else None
    sequences.update(redis_client, "invoice", {"increment": 2}, actor="admin:t", period="2026",
                     series=series)
    first, _ = allocation.allocate(redis_client, "blue", "invoice", "a", DAY, None, hints)
    sequences.update(redis_client, "invoice", {"next_number": first["number"] + 10},
                     actor="admin:t", period="2026", series=series)
    second, _ = allocation.allocate(redis_client, "blue", "invoice", "b", DAY, None, hints)
    sequences.update(redis_client, "invoice", {"next_number": second["number"] + 6},
                     actor="admin:t", period="2026", series=series)
    for full in (False, True):
        found = ledger.gaps(redis_client, "invoice", "2026", GRACE, now=later(0), series=series,
                            full=full)
        assert [g for g in found if g["kind"] == "skipped"] == [
            {"kind": "skipped", "after": first["number"], "next": second["number"],
             "explanation": ledger.SKIP_EXPLANATION},
            {"kind": "skipped", "after": second["number"], "next": second["number"] + 6,
             "explanation": ledger.SKIP_EXPLANATION}], full


def _commands(client) -> int:
    return sum(int(s["calls"]) for s in client.info("commandstats").values())


def _report_commands(client, series: str = "default") -> int:
    ledger.gaps(client, "invoice", "2026", GRACE, series=series)  # the pending index catches up
    before = _commands(client)
    ledger.gaps(client, "invoice", "2026", GRACE, series=series)
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


def _in_eu(client) -> allocation.Hints:
    """Series eu numbers blue (the hint sends blue's documents there first, as an app would
    after its first answer from eu)."""
    series_mod.create_series(client, "eu")
    series_mod.join(client, "eu", "blue")
    return allocation.Hints(series_of={"blue": "eu"})


def _settle(client, series: str, period: str) -> None:
    """Move every confirmed number of ``period`` but the newest into blocks of two."""
    settled.settle(client, "invoice", period, later(60), series=series, block=2, keep=1,
                   after_seconds=0)


def test_the_report_of_a_settled_ledger_costs_the_same_commands_at_any_size(redis_client,
                                                                              monkeypatch):
    """Settled numbers (moved into blocks by compaction) count as in the ledger: the quick
    report of a compacted series, two periods of it compacted, still reads the gaps only."""
    monkeypatch.setattr(ledger, "MAX_PAGE", 2)
    hints = _in_eu(redis_client)
    counts, taken = [], 0
    for size in (6, 12):
        for r in range(taken, size):
            for day in (DAY, dt.date(2027, 1, 5)):
                entry, _ = allocation.allocate(redis_client, "blue", "invoice",
                                               f"{day.year}-{r}", day, None, hints)
                allocation.transition(redis_client, entry["id"], "confirm", entry["formatted"],
                                      actor_kind="agent", actor_system="blue",
                                      actor="agent:blue")
        taken = size
        for period in ("2026", "2027"):
            _settle(redis_client, "eu", period)
        counts.append(_report_commands(redis_client, series="eu"))
        assert ledger.gaps(redis_client, "invoice", "2026", GRACE, series="eu") == []
    assert redis_client.zcard(keys.seq_settled_blocks("invoice", "2027", "eu")) == 5
    assert counts[0] == counts[1], counts


def test_every_lost_settled_block_of_any_series_is_reported(redis_client):
    """Whichever block is lost, first, middle or last, both reports name its numbers."""
    hints = _in_eu(redis_client)
    for r in range(7):
        entry, _ = allocation.allocate(redis_client, "blue", "invoice", str(r), DAY, None, hints)
        allocation.transition(redis_client, entry["id"], "confirm", entry["formatted"],
                              actor_kind="agent", actor_system="blue", actor="agent:blue")
    _settle(redis_client, "eu", "2026")
    assert redis_client.zrange(keys.seq_settled_blocks("invoice", "2026", "eu"), 0, -1) == [
        "1:2", "3:4", "5:6"]
    assert ledger.gaps(redis_client, "invoice", "2026", GRACE, series="eu") == []
    for first in (1, 3, 5):
        block = keys.seq_settled_block("invoice", "2026", first, "eu")
        kept = redis_client.dump(block)
        redis_client.delete(block)
        for full in (False, True):
            assert ledger.gaps(redis_client, "invoice", "2026", GRACE, series="eu",
                               full=full) == [
                {"kind": "missing", "after": first - 1, "before": first + 2}], (first, full)
        redis_client.restore(block, 0, kept)


def test_a_period_with_no_numbers_has_no_gaps(redis_client):
    """Asked about a year nothing was numbered in (yet): nothing to list, by either report."""
    allocation.allocate(redis_client, "blue", "invoice", "a", DAY)
    assert [g["kind"] for g in ledger.gaps(redis_client, "invoice", "2026", 0)] == [
        "unconfirmed"]
    for period in ("2025", "2027"):
        for full in (False, True):
            assert ledger.gaps(redis_client, "invoice", period, 0, full=full) == [], period


def test_an_ordered_number_whose_entry_is_lost_is_named_and_the_rest_still_reported(
        redis_client):
    """Lost data: number 2 is still in the period's order but its entry is gone. Both reports
    name it, and go on to report what follows it (the void of 4)."""
    ids = [allocation.allocate(redis_client, "blue", "invoice", str(r), DAY)[0]["id"]
           for r in range(4)]
    for each in ids[:3]:
        entry = allocation.get(redis_client, each)
        allocation.transition(redis_client, each, "confirm", entry["formatted"],
                              actor_kind="agent", actor_system="blue", actor="agent:blue")
    allocation.transition(redis_client, ids[3], "void", "deleted", actor_kind="admin",
                          actor_system=None, actor="admin:t")
    ledger.gaps(redis_client, "invoice", "2026", GRACE)  # index built
    redis_client.hdel(keys.seq_ledger("invoice", "2026"), "2")
    for full in (False, True):
        found = ledger.gaps(redis_client, "invoice", "2026", GRACE, full=full)
        assert [(g["kind"], g["number"]) for g in found] == [("missing", 2), ("void", 4)], full
        assert found[0] == {"kind": "missing", "number": 2}


def test_an_unconfirmed_number_is_listed_from_the_grace_on(redis_client):
    """A number still issued is a gap once ``grace_seconds`` have passed, not a second later
    (age counted in whole seconds), in both reports."""
    entry, _ = allocation.allocate(redis_client, "blue", "invoice", "a", DAY)
    issued = dt.datetime.fromisoformat(entry["issued_at"].replace("Z", "+00:00"))
    half = dt.timedelta(milliseconds=500)
    for full in (False, True):
        early = issued + dt.timedelta(seconds=GRACE) - half
        assert ledger.gaps(redis_client, "invoice", "2026", GRACE, now=early, full=full) == []
        due = issued + dt.timedelta(seconds=GRACE) + half
        assert [(g["kind"], g["number"], g["age_seconds"]) for g in ledger.gaps(
            redis_client, "invoice", "2026", GRACE, now=due, full=full)] == [
            ("unconfirmed", 1, GRACE)], full


def test_voids_of_an_upgraded_period_are_found_on_every_page_in_any_series(redis_client,
                                                                           monkeypatch):
    """The once-only walk that indexes old voids reads every page (one number a page here),
    from the period's first number on, in the series asked about."""
    monkeypatch.setattr(ledger, "MAX_PAGE", 1)
    hints = _in_eu(redis_client)
    ids = [allocation.allocate(redis_client, "blue", "invoice", str(r), DAY, None, hints)[0]["id"]
           for r in range(4)]
    for each in (ids[0], ids[3]):
        allocation.transition(redis_client, each, "void", "old void", actor_kind="admin",
                              actor_system=None, actor="admin:t")
    # What the release before the index left: the voids without their index entries.
    redis_client.delete(keys.seq_voids("invoice", "2026", "eu"),
                        keys.seq_gap_index("invoice", "2026", "eu"))
    found = ledger.gaps(redis_client, "invoice", "2026", 10**9, series="eu")
    assert [(g["kind"], g["number"]) for g in found] == [("void", 1), ("void", 4)]
    assert redis_client.zrange(keys.seq_voids("invoice", "2026", "eu"), 0, -1) == ["1", "4"]
    assert redis_client.get(keys.seq_gap_index("invoice", "2026", "eu")) == "1"


def test_numbers_recovered_inside_a_skipped_range_are_not_reported_skipped(redis_client):
    """After a restore, an admin raised next_number past the lost numbers (2 -> 10), then
    recover found 3, 4 and 7 in WHMCS: those are in the ledger, so both reports list only
    5-6 and 8-9 as skipped (before: the quick report said 3-9 were skipped, the walk that
    5-9 were lost data)."""
    for r in range(2):
        allocation.allocate(redis_client, "blue", "invoice", f"r{r}", DAY)
    sequences.update(redis_client, "invoice", {"next_number": 10}, actor="admin:t",
                     period="2026")
    evidence = [recover.Evidence("blue", f"INV-2026-{n:06d}", "whmcs:blue", reference=str(n))
                for n in (3, 4, 7)]
    recover.apply(redis_client, recover.plan(redis_client, evidence, {}), actor="admin:t",
                  reason="restored from an older backup")
    assert allocation.allocate(redis_client, "blue", "invoice", "next", DAY)[0]["number"] == 10
    for full in (False, True):
        assert [(g["kind"], g["after"], g["next"]) for g in ledger.gaps(
            redis_client, "invoice", "2026", 10**9, full=full)] == [
            ("skipped", 4, 7), ("skipped", 7, 10)], full
