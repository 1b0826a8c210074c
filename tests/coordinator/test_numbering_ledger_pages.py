"""The ledger as an auditor reads it (DESIGN.md invariant 3), on a real Valkey: every number of
every period once, in order, across pages, each exactly as it reads by its id; an entry lost
from the store is shown where it was, never skipped; and each number of the gap report says who
took it, for what, when, and why it was voided."""

from __future__ import annotations

import datetime as dt

import pytest

from coordinator import keys
from coordinator.numbering import allocation, ledger, pending, settled
from coordinator.numbering import series as series_mod
from coordinator.numbering.allocation import Hints

pytestmark = pytest.mark.integration

DAY_2025, DAY_2026 = dt.date(2025, 6, 1), dt.date(2026, 3, 1)
GRACE = 3600
LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def take(client, system, references, day, hints=None):
    return [allocation.allocate(client, system, "invoice", reference, day, None, hints)[0]["id"]
            for reference in references]


def test_every_number_of_every_period_is_listed_once_in_order_as_read_by_id(redis_client):
    series_mod.create_series(redis_client, "eu")
    series_mod.join(redis_client, "eu", "blue")
    eu = Hints(series_of={"blue": "eu"})
    old = take(redis_client, "blue", ["a", "b"], DAY_2025, eu)
    new = take(redis_client, "blue", ["c", "d", "e", "f"], DAY_2026, eu)
    take(redis_client, "red", ["x"], DAY_2026)  # default's own ledger: never in eu's
    by_id = {each: allocation.get(redis_client, each) for each in old + new}
    assert ledger.periods(redis_client, "invoice", series="eu") == ["2025", "2026"]
    # Pages of three: 2025 in one short page, 2026 in a full page and the rest; oldest first.
    assert list(ledger.iter_ledger(redis_client, "invoice", page=3, series="eu")) == [
        by_id[each] for each in old + new]
    assert list(ledger.iter_ledger(redis_client, "invoice", "2026", page=3, series="eu")) == [
        by_id[each] for each in new]
    # One page, as the API's ledger pages read it: ``limit`` entries above the cursor.
    first = ledger.list_ledger(redis_client, "invoice", "2026", limit=1, series="eu")
    assert first == [by_id[new[0]]]
    assert ledger.list_ledger(redis_client, "invoice", "2026", first[-1]["number"], 2,
                              series="eu") == [by_id[each] for each in new[1:3]]


def test_an_entry_lost_from_the_store_is_listed_missing_where_it_was(redis_client):
    """allocate.lua writes an entry and its order together: an order without its entry is
    lost data, shown in its place, with the numbers after it still listed."""
    series_mod.create_series(redis_client, "eu")
    series_mod.join(redis_client, "eu", "blue")
    eu = Hints(series_of={"blue": "eu"})
    here = take(redis_client, "red", ["a", "b", "c"], DAY_2026)
    there = take(redis_client, "blue", ["a", "b", "c"], DAY_2026, eu)
    kept = {each: allocation.get(redis_client, each) for each in here + there}
    redis_client.hdel(keys.seq_ledger("invoice", "2026"), "2")
    redis_client.hdel(keys.seq_ledger("invoice", "2026", "eu"), "1")
    assert ledger.list_ledger(redis_client, "invoice", "2026") == [
        kept[here[0]],
        {"id": "invoice:2026:2", "number": 2, "status": "missing", "series": "default"},
        kept[here[2]]]
    assert ledger.list_ledger(redis_client, "invoice", "2026", series="eu") == [
        {"id": "eu/invoice:2026:1", "number": 1, "status": "missing", "series": "eu"},
        kept[there[1]], kept[there[2]]]


def test_pages_read_the_same_from_any_cursor_once_numbers_are_settled(redis_client):
    """Settled numbers move out of the ledger hash into compressed blocks (numbering/settled.py):
    every page, from any cursor and of any size, reads what it read before, the blocks' numbers
    merged in order with those still in the hash (series eu: its own blocks)."""
    series_mod.create_series(redis_client, "eu")
    series_mod.join(redis_client, "eu", "blue")
    ids = take(redis_client, "blue", [f"r{i}" for i in range(10)], DAY_2026,
               Hints(series_of={"blue": "eu"}))
    for i, each in enumerate(ids):
        if i == 4:
            allocation.transition(redis_client, each, "void", "deleted", actor_kind="agent",
                                  actor_system="blue", actor="agent:blue")
        elif i != 8:
            allocation.transition(redis_client, each, "confirm",
                                  allocation.get(redis_client, each)["formatted"],
                                  actor_kind="agent", actor_system="blue", actor="agent:blue")

    def pages():
        return {(after, limit): ledger.list_ledger(redis_client, "invoice", "2026", after, limit,
                                                   series="eu")
                for after in range(11) for limit in (1, 2, 3, 4)}

    before = pages()
    assert [e["number"] for e in before[0, 4] + before[4, 4] + before[8, 4]] == list(range(1, 11))
    # Blocks of three confirmed numbers, the newest kept: 1-3 and 4, 6, 7 (5 is void, 9 issued;
    # 8 alone is no full block).
    assert settled.settle(redis_client, "invoice", "2026", LATER, series="eu", block=3,
                          keep=1, after_seconds=0) == 6
    assert sorted(map(int, redis_client.hkeys(keys.seq_ledger("invoice", "2026", "eu")))) == [
        5, 8, 9, 10]
    assert pages() == before


def test_each_gap_names_who_took_the_number_for_what_when_and_why(redis_client):
    """The quick report and the full walk list the same whole objects: the void with its
    reason, who voided it and the number its document got instead; the number left
    unconfirmed with its age; and a period never used has no gap at all."""
    ids = take(redis_client, "blue", ["a", "b", "c", "d"], DAY_2026)
    for each, reason in ((ids[0], "sent to the wrong customer"), (ids[2], "duplicate")):
        allocation.transition(redis_client, each, "void", reason, actor_kind="admin",
                              actor_system=None, actor="admin:t")
    reissued, _ = allocation.reissue(redis_client, ids[0], "issue it again", actor="admin:t")
    for each in (ids[3], reissued["id"]):
        allocation.transition(redis_client, each, "confirm",
                              allocation.get(redis_client, each)["formatted"],
                              actor_kind="agent", actor_system="blue", actor="agent:blue")
    one, two, three = (allocation.get(redis_client, each) for each in ids[:3])
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=GRACE + 90)

    def base(entry):
        return {"id": entry["id"], "number": entry["number"], "formatted": entry["formatted"],
                "system": "blue", "document": "invoice", "reference": entry["reference"],
                "issued_at": entry["issued_at"]}

    issued = dt.datetime.fromisoformat(two["issued_at"])
    expected = [
        {"kind": "void", **base(one), "reason": "sent to the wrong customer",
         "voided_at": one["voided_at"], "voided_by": "admin:t",
         "reissued_as": reissued["id"]},
        {"kind": "unconfirmed", **base(two),
         "age_seconds": int((now - issued).total_seconds())},
        {"kind": "void", **base(three), "reason": "duplicate", "voided_at": three["voided_at"],
         "voided_by": "admin:t"},
    ]
    assert [g["reference"] for g in expected] == ["a", "b", "c"]
    assert expected[1]["age_seconds"] > GRACE  # past the grace: reported
    assert ledger.gaps(redis_client, "invoice", "2026", GRACE, now=now) == expected
    assert ledger.gaps(redis_client, "invoice", "2026", GRACE, now=now, full=True) == expected
    assert ledger.gaps(redis_client, "invoice", "2031", GRACE, now=now) == []


def test_old_voids_of_a_series_are_found_whatever_another_series_indexed(redis_client):
    """Voids made before the gap report indexed them (upgraded data) are found by one walk of
    their own series' period, even when default's same period was indexed already; and eu's
    report reads eu's counter (default's, further on, is no number missing in eu)."""
    series_mod.create_series(redis_client, "eu")
    series_mod.join(redis_client, "eu", "blue")
    take(redis_client, "red", ["a", "b", "c"], DAY_2026)  # default's counter past eu's
    ids = take(redis_client, "blue", ["a", "b"], DAY_2026, Hints(series_of={"blue": "eu"}))
    allocation.transition(redis_client, ids[0], "void", "deleted", actor_kind="admin",
                          actor_system=None, actor="admin:t")
    assert ledger.gaps(redis_client, "invoice", "2026", GRACE) == []  # default's index built
    redis_client.delete(keys.seq_voids("invoice", "2026", "eu"),
                        keys.seq_gap_index("invoice", "2026", "eu"))
    for full in (False, True):
        assert [(g["kind"], g["id"]) for g in ledger.gaps(
            redis_client, "invoice", "2026", GRACE, series="eu", full=full)] == [("void", ids[0])]


def test_the_gap_report_lists_every_unconfirmed_number_not_a_batch(redis_client, monkeypatch):
    """The unconfirmed-count scrape re-reads past-grace numbers in bounded batches
    (``pending.RECHECK_LIMIT``, 10,000; 2 here); the gap report must list them all."""
    monkeypatch.setattr(pending.recheck, "__defaults__", (2,))
    ids = take(redis_client, "blue", ["a", "b", "c"], DAY_2026)
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=GRACE + 90)
    for full in (False, True):
        assert [(g["kind"], g["id"]) for g in ledger.gaps(
            redis_client, "invoice", "2026", GRACE, now=now, full=full)] == [
            ("unconfirmed", each) for each in ids]


def test_a_period_longer_than_a_page_is_listed_whole(redis_client):
    """A page without a limit holds 100 entries (as the API's); the export's iteration reads
    pages of its own size (500), so a period of 101 numbers is listed whole."""
    batch = allocation.allocate_batch(redis_client, "blue", [
        allocation.Item("invoice", f"r{i}", DAY_2026) for i in range(101)])
    numbers = [entry["number"] for entry, _ in batch]
    assert [e["number"] for e in ledger.list_ledger(redis_client, "invoice", "2026")] == (
        numbers[:100])
    assert [e["number"] for e in ledger.iter_ledger(redis_client, "invoice")] == numbers
