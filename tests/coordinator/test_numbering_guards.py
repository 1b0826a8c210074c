"""Guards of allocation that the mutation run (issue 17) found without a test of their own."""

from __future__ import annotations

import pytest

from coordinator import keys
from tests.support import snapshot

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]

SWITCHING = "Credit-note numbering is being switched between sequences; retry shortly"


def take(client, headers, reference, document="invoice", date="2026-11-21"):
    return client.post("/v1/allocations", headers=headers,
                       json={"document": document, "reference": reference, "date": date})


def test_a_credit_note_during_a_half_done_switch_is_told_to_retry_and_takes_nothing(
    client, agent, redis_client, valkey
):
    """Mid-switch of credit notes to the invoice sequence (credit_note already closed, invoice
    not yet open) neither sequence serves credit notes. The agent must be told exactly that,
    so that it retries, and no number may be taken while the switch is half done."""
    blue = agent("blue")
    assert take(client, blue, "warm-up").status_code == 201
    redis_client.hset(keys.seq_settings("credit_note"), "dedicated", "0")
    before = snapshot(valkey.url)
    answer = take(client, blue, "cn-1", document="credit_note")
    assert answer.status_code == 503
    assert answer.get_json()["message"] == SWITCHING
    assert snapshot(valkey.url) == before


def _changed_keys(before: dict, after: dict) -> set[str]:
    return {key.decode() for key in set(before) | set(after) if before.get(key) != after.get(key)}


def test_confirm_and_void_in_a_series_write_only_that_series_keys(redis_client):
    """Allocating, confirming, re-confirming, voiding and reissuing a number of series eu
    write only eu's keys: its ledger events (what its chain and `verify` read), its void index
    (what its gap report reads), the repeat's write. One hash slot, as a Redis Cluster needs; a
    key of the default series would put eu's events in another entity's chain."""
    from datetime import date

    from coordinator.exceptions import NumberingBehind
    from coordinator.numbering import allocation, guard, series

    series.create_series(redis_client, "eu", "EU entity")
    series.leave(redis_client, "default", "green")
    series.join(redis_client, "eu", "green")
    redis_client.hset(keys.system("green"), mapping={"name": "green", "series": "eu"})
    day = date(2026, 5, 5)
    first, _ = allocation.allocate(redis_client, "green", "invoice", "1", day)
    before = snapshot(redis_client)
    second, _ = allocation.allocate(redis_client, "green", "invoice", "2", day)
    assert _changed_keys(before, snapshot(redis_client)) == {
        keys.seq_ledger("invoice", "2026", "eu"), keys.seq_ledger_order("invoice", "2026", "eu"),
        keys.seq_counter("invoice", "2026", "eu"), keys.seq_stats("invoice", "eu"),
        keys.seq_refs("invoice", "invoice", "green", "eu"), keys.seq_events("invoice", "eu"),
        keys.series_formatted("eu")}
    who = {"actor_kind": "agent", "actor_system": "green", "actor": "agent:green"}
    before = snapshot(redis_client)
    allocation.transition(redis_client, first["id"], "confirm", first["formatted"], **who)
    allocation.transition(redis_client, first["id"], "confirm", first["formatted"], **who)
    allocation.transition(redis_client, second["id"], "void", "deleted in WHMCS", **who)
    written = _changed_keys(before, snapshot(redis_client))
    assert written == {keys.seq_ledger("invoice", "2026", "eu"),
                       keys.seq_stats("invoice", "eu"), keys.seq_events("invoice", "eu"),
                       keys.seq_voids("invoice", "2026", "eu")}
    # An admin's reissue of the void number: eu's keys only, each of its own sequence.
    before = snapshot(redis_client)
    third, _ = allocation.reissue(redis_client, second["id"], "voided by mistake", actor="admin")
    assert third["id"] == "eu/invoice:2026:3"
    assert _changed_keys(before, snapshot(redis_client)) == {
        keys.seq_ledger("invoice", "2026", "eu"), keys.seq_ledger_order("invoice", "2026", "eu"),
        keys.seq_counter("invoice", "2026", "eu"), keys.seq_stats("invoice", "eu"),
        keys.seq_refs("invoice", "invoice", "green", "eu"), keys.seq_events("invoice", "eu"),
        keys.series_formatted("eu")}
    # A reissue reads eu's guard: once green's WHMCS shows eu ahead, eu's reissue is refused
    # (default is not behind).
    allocation.transition(redis_client, third["id"], "void", "again", actor_kind="admin",
                          actor_system=None, actor="admin")
    guard.check_synced_numbers(redis_client, "green", ["INV-2026-000009"], series="eu")
    before = snapshot(redis_client)
    with pytest.raises(NumberingBehind, match="^numbering of invoice of series eu in period "
                                              "2026 is refused: the WHMCS of green already "
                                              "shows INV-2026-000009"):
        allocation.reissue(redis_client, third["id"], "again", actor="admin")
    assert snapshot(redis_client) == before


def test_a_series_whose_settings_were_lost_gets_its_own_defaults_back_and_numbers(redis_client):
    """A series whose settings hash is gone (a partial restore) answers 'uninitialized': its
    own defaults are written again and the batch numbers, in that series, not default's."""
    from datetime import date

    from coordinator.numbering import allocation, series
    from coordinator.numbering.allocation import Item

    series.create_series(redis_client, "eu", "EU entity")
    series.leave(redis_client, "default", "green")
    series.join(redis_client, "eu", "green")
    redis_client.hset(keys.system("green"), mapping={"name": "green", "series": "eu"})
    day = date(2026, 5, 5)
    allocation.allocate(redis_client, "green", "invoice", "1", day)
    default_settings = redis_client.hgetall(keys.seq_settings("invoice"))
    redis_client.delete(keys.seq_settings("invoice", "eu"))
    [(entry, new)] = allocation.allocate_batch(redis_client, "green",
                                               [Item("invoice", "2", day)])
    assert (new, entry["series"], entry["number"]) == (True, "eu", 2)
    assert redis_client.hgetall(keys.seq_settings("invoice", "eu")) == default_settings


def test_a_store_that_keeps_refusing_is_answered_503_not_retried_for_ever(redis_client,
                                                                         monkeypatch):
    """Each refusal the allocation repairs (a changed reset, a moved credit-note home, an
    unknown member, missing settings) is retried once: a store that answers the same again
    gets a 503, never an endless loop."""
    from datetime import date

    from coordinator.exceptions import ServiceUnavailable
    from coordinator.numbering import allocation, scripts

    calls = []

    def refuses(client, script, keys_, args, durability):
        calls.append(script)
        return ["error", "1", "reset", "yearly"], None

    monkeypatch.setattr(scripts, "run", refuses)
    with pytest.raises(ServiceUnavailable, match="^Sequence invoice is not initialised; retry$"):
        allocation.allocate(redis_client, "blue", "invoice", "1", date(2026, 5, 5))
    assert len(calls) == 2  # the first answer, and the one retry with the reset it named


def test_a_stale_hint_that_credit_notes_share_the_invoice_sequence_is_corrected(redis_client):
    """A process that last saw credit notes numbered in the invoice sequence, after an admin
    made them dedicated again: the script answers 'moved' and the credit note is numbered in
    its own sequence, once, with the hint corrected for the next one."""
    from datetime import date

    from coordinator.numbering import allocation
    from coordinator.numbering.allocation import Hints, Item

    hints = Hints(credit_note_home={"default": "invoice"})
    [(entry, new)] = allocation.allocate_batch(
        redis_client, "blue", [Item("credit_note", "cn-1", date(2026, 5, 5))], hints=hints)
    assert (new, entry["sequence"], entry["number"]) == (True, "credit_note", 1)
    assert hints.credit_note_home == {"default": "credit_note"}
    assert redis_client.get(keys.seq_counter("invoice", "2026")) is None  # nothing taken there


def test_a_system_closed_in_every_series_is_told_it_is_between_series(redis_client):
    """A move that stopped half-way: the registry names series eu, and both default and eu
    have closed the system. No number is taken; the 503 says what happened and what to do."""
    from datetime import date

    from coordinator.exceptions import ServiceUnavailable
    from coordinator.numbering import allocation, series

    series.create_series(redis_client, "eu", "EU entity")
    series.leave(redis_client, "default", "green")
    series.join(redis_client, "eu", "green")
    series.leave(redis_client, "eu", "green")
    redis_client.hset(keys.system("green"), mapping={"name": "green", "series": "eu"})
    with pytest.raises(ServiceUnavailable) as refused:
        allocation.allocate(redis_client, "green", "invoice", "1", date(2026, 5, 5))
    assert refused.value.message == (
        "System 'green' is between series (a move or removal did not finish); retry shortly, "
        "or repeat the admin's change")
    assert [redis_client.get(keys.seq_counter("invoice", "2026", name))
            for name in ("default", "eu")] == [None, None]  # no number taken


def test_a_store_that_stays_uninitialised_after_adoption_is_refused_not_looped(redis_client,
                                                                              monkeypatch):
    """Adopting the previous release's data is tried once per request: a store that still
    answers 'not initialised' afterwards gets the refusal, not another adoption for ever."""
    from datetime import date

    from coordinator.exceptions import NumberingNotInitialised
    from coordinator.numbering import allocation, guard, scripts

    adoptions = []
    monkeypatch.setattr(scripts, "run", lambda *args: (["error", "1", "not_initialised"], None))
    monkeypatch.setattr(guard, "adopt", lambda client, series: adoptions.append(series) or True)
    with pytest.raises(NumberingNotInitialised):
        allocation.allocate(redis_client, "blue", "invoice", "1", date(2026, 5, 5))
    assert adoptions == ["default"]
