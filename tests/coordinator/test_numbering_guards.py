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
