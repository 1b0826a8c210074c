"""The guards against numbering from a store that may be behind reality (real server)."""

from __future__ import annotations

from datetime import date

import pytest

from coordinator import keys
from coordinator.exceptions import NumberingBehind, NumberingNotInitialised
from coordinator.numbering import allocation, guard, sequences, series

pytestmark = pytest.mark.integration

DAY = date(2026, 5, 5)


def _eu(client) -> None:
    series.create_series(client, "eu", "EU entity")
    series.leave(client, "default", "green")
    series.join(client, "eu", "green")
    client.hset(keys.system("green"), mapping={"name": "green", "series": "eu"})


def test_an_empty_store_refuses_to_number_until_initialised(redis_client):
    redis_client.flushall()  # the fixture initialises the default series; this is a lost store
    with pytest.raises(NumberingNotInitialised) as refused:
        allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    assert refused.value.message == (  # what the admin reads in the 503
        "numbering of series default is not initialised: this store never issued a number "
        "there and its sequences were never set explicitly, so it may have lost its data. "
        "Restore a backup, run `invoice-sync recover`, or set next_number of the sequences "
        "(PATCH /v1/sequences/{name}); see docs/RECOVERY.md")
    assert redis_client.hlen(keys.seq_ledger("invoice", "2026")) == 0
    assert redis_client.get(keys.seq_counter("invoice", "2026")) is None
    sequences.update(redis_client, "invoice", {"next_number": 1}, actor="admin")
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    assert new and entry["number"] == 1


def test_re_registering_systems_and_series_on_a_lost_store_does_not_initialise_it(
        redis_client):
    redis_client.flushall()
    _eu(redis_client)  # the admin re-creates what was lost
    for system in ("blue", "green"):
        with pytest.raises(NumberingNotInitialised):
            allocation.allocate(redis_client, system, "invoice", "1", DAY)
    assert not guard.is_initialised(redis_client, "default")
    assert not guard.is_initialised(redis_client, "eu")
    # serve says so at start, for each series (and adopts neither).
    assert guard.adopt_all(redis_client) == ["default", "eu"]
    # the admin sets eu's numbering: that initialises eu, and says nothing of default (whose
    # recover stopped half-way: it keeps waiting for recover to be run again)
    guard.mark_recovering(redis_client, "recover by admin, stopped", "default")
    sequences.update(redis_client, "invoice", {"next_number": 1}, actor="admin", series="eu")
    assert guard.is_initialised(redis_client, "eu")
    assert not guard.is_initialised(redis_client, "default")
    assert guard.recovering(redis_client, "default").endswith(" recover by admin, stopped")


def test_a_new_series_in_an_initialised_store_numbers(redis_client):
    _eu(redis_client)
    entry, new = allocation.allocate(redis_client, "green", "invoice", "1", DAY)
    assert new and entry["id"] == "eu/invoice:2026:1"
    assert guard.is_initialised(redis_client, "eu")


def test_series_that_issued_numbers_before_the_guard_are_adopted_without_renumbering(
        redis_client):
    _eu(redis_client)
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    allocation.allocate(redis_client, "green", "credit_note", "c1", DAY)
    for name in ("default", "eu"):  # the data as the release before the guard left it
        for seq in sequences.SEQUENCES:
            redis_client.delete(keys.seq_guard(seq, name))
    assert guard.adopt_all(redis_client) == []
    assert allocation.allocate(redis_client, "blue", "invoice", "2", DAY)[0]["number"] == 2
    assert allocation.allocate(redis_client, "green", "credit_note", "c2", DAY)[0]["number"] == 2


def test_settings_an_admin_set_before_the_guard_count_as_initialised(redis_client):
    sequences.update(redis_client, "invoice", {"next_number": 40}, actor="admin")
    for seq in sequences.SEQUENCES:
        redis_client.delete(keys.seq_guard(seq))
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    assert new and entry["number"] == 40


def test_a_series_whose_format_an_admin_set_before_the_guard_is_adopted(redis_client):
    _eu(redis_client)
    sequences.update(redis_client, "invoice", {"format": "EU-{YEAR}-{NUMBER}"}, actor="admin",
                     series="eu")
    for name in ("default", "eu"):  # the data as the release before the guard left it
        for seq in sequences.SEQUENCES:
            redis_client.delete(keys.seq_guard(seq, name))
    # eu's settings were set explicitly; default is then a new series of an initialised store.
    assert guard.adopt_all(redis_client) == []
    assert guard.is_initialised(redis_client, "eu") and guard.is_initialised(redis_client,
                                                                             "default")


def test_a_series_created_after_the_backup_waits_with_the_restored_one(redis_client):
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)  # in the backup
    _eu(redis_client)  # not in it: its numbers, if any, were lost with the store
    with redis_client.pipeline(transaction=True) as pipe:  # as restore leaves default
        guard.queue_restored(pipe, "ser:default", "backup b.json")
        pipe.execute()
    # default's history is default's: it proves nothing about eu.
    assert guard.adopt_all(redis_client) == ["default", "eu"]


def test_a_whmcs_number_above_the_counter_stops_its_period_until_next_number_passes_it(
        redis_client):
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    # A number of another scheme among ours (in any order) is ignored, not the end of the list.
    ahead = guard.check_synced_numbers(redis_client, "red",
                                       ["INV-2026-000001", "other-9", "INV-2026-000007"])
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


def test_the_highest_number_any_sync_saw_stays_the_bar_whatever_the_order(redis_client):
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    guard.check_synced_numbers(redis_client, "red", ["INV-2026-000007"])
    # blue's WHMCS, synced later, shows a lower number (still above the counter): red's stays.
    ahead = guard.check_synced_numbers(redis_client, "blue", ["INV-2026-000004"])
    assert [(a["system"], a["number"]) for a in ahead] == [("blue", 4)]
    sequences.update(redis_client, "invoice", {"next_number": 5}, actor="admin", period="2026")
    with pytest.raises(NumberingBehind, match="^numbering of invoice in period 2026 is refused: "
                                              "the WHMCS of red already shows INV-2026-000007 "
                                              "\\(number 7\\)"):
        allocation.allocate(redis_client, "blue", "invoice", "2", DAY)
    # The first number of a period the store never numbered in is ahead too.
    ahead = guard.check_synced_numbers(redis_client, "red", ["INV-2027-000001"])
    assert [(a["period"], a["number"], a["counter"]) for a in ahead] == [("2027", 1, 0)]
    with pytest.raises(NumberingBehind, match="INV-2027-000001"):
        allocation.allocate(redis_client, "blue", "invoice", "y", date(2027, 1, 2))


def test_the_refusal_names_the_number_and_system_even_if_the_format_has_a_bar(redis_client):
    sequences.update(redis_client, "invoice", {"format": "INV|{YEAR}|{NUMBER}"}, actor="admin")
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    guard.check_synced_numbers(redis_client, "red", ["INV|2026|000007"])
    with pytest.raises(NumberingBehind) as refused:
        allocation.allocate(redis_client, "blue", "invoice", "2", DAY)
    assert refused.value.message.startswith(
        "numbering of invoice in period 2026 is refused: the WHMCS of red already shows "
        "INV|2026|000007 (number 7), above the last number this coordinator issued")


def test_serve_adopts_every_series_it_can_and_names_each_one_still_refused(redis_client, capsys):
    from coordinator.cli import _check_numbering

    # default numbered with the release before the guard (no guard yet); eu is new; us was
    # restored from a backup: adopting the first two must not let us number.
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    for seq in sequences.SEQUENCES:
        redis_client.delete(keys.seq_guard(seq))
    _eu(redis_client)
    series.create_series(redis_client, "us", "US entity")
    with redis_client.pipeline(transaction=True) as pipe:  # as a restore of us leaves it
        guard.queue_restored(pipe, "ser:us", "backup us.json")
        pipe.execute()
    assert guard.adopt_all(redis_client) == ["us"]
    assert guard.is_initialised(redis_client, "default") and guard.is_initialised(redis_client,
                                                                                 "eu")
    assert not guard.is_initialised(redis_client, "us")
    _check_numbering(redis_client, new_store=False)  # what serve does at start
    printed = capsys.readouterr().err.splitlines()  # (a JSON log line may come first)
    assert [line for line in printed if not line.startswith("{")] == [
        "allocations are refused (503): numbering of series us waits after a restore (backup "
        "us.json): numbers issued after the backup was taken may already be printed in WHMCS. "
        "Run `invoice-sync recover` (it reads every system's WHMCS and raises the counters past "
        "what it finds), or set next_number of the sequences (PATCH /v1/sequences/{name}); see "
        "docs/RECOVERY.md"]


def test_the_sync_guard_reads_a_system_s_numbers_with_its_own_series_formats(redis_client):
    _eu(redis_client)
    sequences.update(redis_client, "invoice", {"format": "EU-{YEAR}-{NUMBER}"}, actor="admin",
                     series="eu")
    # eu numbers credit notes in their own sequence; default draws them from invoice.
    sequences.update(redis_client, "credit_note", {"dedicated": False}, actor="admin")
    allocation.allocate(redis_client, "green", "invoice", "1", DAY)
    assert [(a["sequence"], a["number"]) for a in guard.check_synced_numbers(
        redis_client, "green", ["CN-2026-000003"], "eu")] == [("credit_note", 3)]
    # default's credit_note sequence numbers nothing: its format is no number of default.
    assert guard.check_synced_numbers(redis_client, "blue", ["CN-2026-000003"]) == []
    # The number eu issued itself, seen in green's WHMCS, is not ahead of eu's counter.
    assert guard.check_synced_numbers(redis_client, "green", ["EU-2026-000001"], "eu") == []
    # "INV-…" is default's format, not eu's: green's WHMCS showing it proves nothing about eu.
    ahead = guard.check_synced_numbers(redis_client, "green",
                                       ["EU-2026-000005", "INV-2026-000009"], "eu")
    assert [(a["series"], a["sequence"], a["number"]) for a in ahead] == [("eu", "invoice", 5)]
    with pytest.raises(NumberingBehind, match="^numbering of invoice of series eu in period "
                                              "2026 is refused: the WHMCS of green already "
                                              "shows EU-2026-000005"):
        allocation.allocate(redis_client, "green", "invoice", "2", DAY)
    entry, _ = allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    assert entry["number"] == 1  # the default series is not behind


def test_a_reissue_takes_no_number_from_a_restored_or_behind_store(redis_client):
    taken, _ = allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    allocation.transition(redis_client, taken["id"], "void", "sent twice", actor_kind="admin",
                          actor="admin",
                          actor_system=None)
    with redis_client.pipeline(transaction=True) as pipe:  # as restore leaves the series
        guard.queue_restored(pipe, "ser:default", "backup b.json taken 2026-05-01T00:00:00Z")
        pipe.execute()
    with pytest.raises(NumberingNotInitialised, match="waits after a restore"):
        allocation.reissue(redis_client, taken["id"], "mistake", actor="admin")
    guard.mark_initialised(redis_client, "test")
    guard.check_synced_numbers(redis_client, "red", ["INV-2026-000004"])
    with pytest.raises(NumberingBehind, match="INV-2026-000004"):
        allocation.reissue(redis_client, taken["id"], "mistake", actor="admin")
    assert redis_client.get(keys.seq_counter("invoice", "2026")) == "1"


def test_a_batch_takes_no_number_from_a_lost_or_behind_store(redis_client):
    """Batches run the same script as single allocations: the guard holds for every item, a
    refused batch takes nothing, and the replays in a batch still answer."""
    from coordinator.numbering.allocation import Item

    def batch(*references):
        return allocation.allocate_batch(
            redis_client, "blue", [Item("invoice", r, DAY) for r in references])

    assert [new for _, new in batch("1")] == [True]
    guard.check_synced_numbers(redis_client, "red", ["INV-2026-000007"])
    before = redis_client.get(keys.seq_counter("invoice", "2026"))
    with pytest.raises(NumberingBehind, match="INV-2026-000007"):
        batch("1", "2")  # a replay first, then a new number: the whole batch is refused
    assert redis_client.get(keys.seq_counter("invoice", "2026")) == before
    assert [(e["number"], new) for e, new in batch("1")] == [(1, False)]

    redis_client.flushall()  # a lost store
    with pytest.raises(NumberingNotInitialised):
        batch("1", "2")
    assert redis_client.get(keys.seq_counter("invoice", "2026")) is None
