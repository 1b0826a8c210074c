"""A batch allocation and the audit ledger's hash chain, on a real Valkey: a batch appends what
the same allocations made one by one would append (one ``issued`` event per new number, none for
a replay), in the batch's own series, sealed after the response; verify (HTTP and CLI) then
says ok with every number counted; any interleaving of singles and batches leaves a gapless,
duplicate-free ledger whose chain verifies."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import clock, keys
from coordinator.cli import main
from coordinator.exceptions import Conflict
from coordinator.numbering import allocation, chain, iter_ledger
from coordinator.numbering import series as series_mod
from coordinator.numbering.allocation import Hints, Item
from coordinator.numbering.api import SEALER
from tests.coordinator import redis_counting
from tests.coordinator.systems_support import register, registry_config
from tests.support import initialise_numbering

pytestmark = pytest.mark.integration


@pytest.fixture
def app_config(app_config):
    return registry_config(app_config)


def batch(client, headers, *items):
    response = client.post("/v1/allocation-batches", headers=headers, json={"items": [
        {"document": doc, "reference": ref, "date": day} for doc, ref, day in items]})
    assert response.status_code == 200, response.get_json()
    response.close()
    sealed(client)
    return response.get_json()["items"]


def sealed(client):
    """Wait for the app's sealer thread to seal what the requests so far handed it."""
    sealer = client.application.extensions.get(SEALER)
    assert sealer is None or sealer.drain(30), "the sealer thread did not finish in 30 s"


def events(redis_client, sequence, series="default"):
    return [json.loads(raw) for raw in
            redis_client.lrange(keys.seq_events(sequence, series), 0, -1)]


def verify(client, headers, series, sequence, period=None):
    response = client.get(f"/v1/series/{series}/sequences/{sequence}/ledger/verify"
                          + (f"?period={period}" if period else ""), headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


ITEMS = [("invoice", "a", "2026-02-01"), ("credit_note", "b", "2026-02-02"),
         ("invoice", "c", "2026-02-03"), ("invoice", "a", "2026-02-01"),
         ("invoice", "d", "2026-02-04")]


@pytest.mark.parametrize("series", ["default", "acme"])
def test_a_batch_appends_one_issued_event_per_new_number_sealed_after_the_response(
        client, admin, redis_client, series):
    if series != "default":
        assert client.post("/v1/series", headers=admin, json={"name": series}).status_code == 201
    blue = register(client, admin, "blue", None if series == "default" else series)
    single = client.post("/v1/allocations", headers=blue, json={
        "document": "invoice", "reference": "first", "date": "2026-01-15"})
    assert single.status_code == 201
    taken = batch(client, blue, *ITEMS)
    assert [e["replay"] for e in taken] == [False, False, False, True, False]
    assert {e["series"] for e in taken} == {series}

    invoices, notes = events(redis_client, "invoice", series), events(redis_client,
                                                                      "credit_note", series)
    # The single's event, then one per new invoice of the batch in item order; the replay of
    # "a" appends nothing.
    assert [(e["seq"], e["type"], e["id"], e["reference"]) for e in invoices] == [
        (0, "issued", single.get_json()["id"], "first"),
        (1, "issued", taken[0]["id"], "a"), (2, "issued", taken[2]["id"], "c"),
        (3, "issued", taken[4]["id"], "d")]
    assert [(e["seq"], e["id"], e["formatted"], e["document"]) for e in notes] == [
        (0, taken[1]["id"], taken[1]["formatted"], "credit_note")]
    assert [e["number"] for e in invoices] == ["1", "2", "3", "4"]
    # Sealed by the sealer thread after the response, without waiting for a verify.
    assert redis_client.llen(keys.seq_chain("invoice", series)) == 4
    assert redis_client.llen(keys.seq_chain("credit_note", series)) == 1
    # Nothing was written to another series' keys.
    other = "acme" if series == "default" else "default"
    assert redis_client.llen(keys.seq_events("invoice", other)) == 0

    result = verify(client, admin, series, "invoice", "2026")
    assert (result["ok"], result["events"], result["entries"], result["unchained_numbers"]) == (
        True, 4, 4, 0)
    assert result["head"] == redis_client.lindex(keys.seq_chain("invoice", series), -1)
    notes_result = verify(client, admin, series, "credit_note")
    assert (notes_result["ok"], notes_result["events"]) == (True, 1)

    # Replaying the whole batch appends nothing and leaves the chain as it was.
    again = batch(client, blue, *ITEMS)
    assert all(e["replay"] for e in again)
    assert len(events(redis_client, "invoice", series)) == 4
    assert verify(client, admin, series, "invoice")["head"] == result["head"]


def test_cli_ledger_verify_counts_a_batch(client, admin, redis_client, valkey, monkeypatch):
    blue = register(client, admin, "blue")
    taken = batch(client, blue, *[("invoice", f"r{i}", "2026-03-01") for i in range(25)])
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    ran = CliRunner().invoke(main, ["ledger", "verify", "--period", "2026"])
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.output)
    assert (result["ok"], result["events"], result["entries"]) == (True, 25, 25)
    # The chain covers exactly the batch's numbers.
    assert [e["id"] for e in events(redis_client, "invoice")] == [e["id"] for e in taken]
    # A changed byte in the middle of the batch's events is found by the same command.
    raw = redis_client.lindex(keys.seq_events("invoice"), 12)
    redis_client.lset(keys.seq_events("invoice"), 12, raw.replace('"r12"', '"r99"'))
    broken = CliRunner().invoke(main, ["ledger", "verify"])
    assert broken.exit_code == 1
    assert json.loads(broken.output)["first_bad"]["seq"] == 12


def test_a_refused_batch_appends_no_event(client, admin, redis_client):
    blue = register(client, admin, "blue")
    batch(client, blue, ("invoice", "old", "2025-12-31"))
    refused = client.post("/v1/allocation-batches", headers=blue, json={"items": [
        {"document": "invoice", "reference": "n1", "date": "2026-01-01"},
        {"document": "invoice", "reference": "old", "date": "2026-01-02"}]})
    assert refused.status_code == 409
    assert len(events(redis_client, "invoice")) == 1
    assert redis_client.llen(keys.seq_chain("invoice")) == 1


# --- any interleaving of singles and batches ------------------------------------------------

_ITEM = st.builds(Item, st.sampled_from(["invoice", "credit_note"]),
                  st.sampled_from("abcdefghij"),
                  st.sampled_from([date(2025, 12, 31), date(2026, 1, 1), date(2026, 7, 9)]))
_STEP = st.one_of(st.tuples(st.just("single"), _ITEM),
                  st.tuples(st.just("batch"), st.lists(_ITEM, min_size=1, max_size=6)))


def _period(entry_id: str) -> str:
    return entry_id.split(":")[-2]


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=8))
def test_any_interleaving_of_singles_and_batches_keeps_the_chain_whole(redis_client, steps):
    redis_client.flushall()
    initialise_numbering(redis_client)
    hints, numbered = Hints(), {}
    for kind, what in steps:
        try:
            if kind == "single":
                taken = [allocation.allocate(redis_client, "blue", what.document,
                                             what.reference, what.day, hints=hints)]
            else:
                taken = allocation.allocate_batch(redis_client, "blue", what, hints=hints)
        except Conflict:
            continue  # refused (another period): nothing taken, checked below by the counts
        for entry, new in taken:
            assert new == (entry["id"] not in numbered.values())
            numbered[(entry["document"], entry["reference"])] = entry["id"]
        for sequence in ("invoice", "credit_note"):
            # What the API does after each response; the chain then covers every event.
            sealed = chain.seal(redis_client, sequence)
            assert sealed == redis_client.llen(keys.seq_events(sequence))

    for sequence in ("invoice", "credit_note"):
        issued = [e for e in events(redis_client, sequence) if e["type"] == "issued"]
        result = chain.verify(redis_client, sequence)
        assert result["ok"] is True and result["events"] == len(issued)
        assert result["unchained_numbers"] == 0
        ids = [e["id"] for e in issued]
        assert len(ids) == len(set(ids))
        assert sorted(ids) == sorted(i for i in numbered.values() if i.startswith(sequence))
        assert len({e["formatted"] for e in issued}) == len(issued)
        for period in {_period(i) for i in ids}:
            numbers = [int(e["number"]) for e in issued if e["period"] == period]
            assert numbers == list(range(1, len(numbers) + 1))  # in order, gapless
            ledger = [e["id"] for e in iter_ledger(redis_client, sequence, period)]
            assert ledger == [e["id"] for e in issued if e["period"] == period]


# --- sealing what the script appended, in one round trip ------------------------------------


def test_sealing_a_new_number_is_one_command_after_the_response(client, admin, redis_client):
    blue = register(client, admin, "blue")
    batch(client, blue, ("invoice", "warm", "2026-03-01"))

    def allocate():
        batch(client, blue, *[("invoice", f"r{i}", "2026-03-01") for i in range(5)],
              ("credit_note", "c", "2026-03-01"))
        single = client.post("/v1/allocations", headers=blue, json={
            "document": "invoice", "reference": "s", "date": "2026-03-01"})
        assert single.status_code == 201
        sealed(client)

    # Each request: the script with its WAITAOF (agents are not rate-limited here, so their
    # token comes from the worker's token cache, no lookup); then one SEAL per sequence
    # appended to (two for the batch, one for the single), without the reads (LLEN and LINDEX
    # of the chain, LRANGE of the events) of a sealer that knows nothing.
    assert redis_counting.top_level(redis_client, allocate) == [
        "EVALSHA", "WAITAOF", "EVALSHA", "EVALSHA",
        "EVALSHA", "WAITAOF", "EVALSHA"]
    assert redis_client.llen(keys.seq_chain("invoice")) == 7
    assert redis_client.llen(keys.seq_chain("credit_note")) == 1
    assert chain.verify(redis_client, "invoice")["ok"] is True


def test_events_other_allocations_left_unsealed_are_sealed_in_the_same_round_trip(
        client, admin, redis_client):
    blue = register(client, admin, "blue")
    # Allocations whose seal has not run yet (another thread, or a worker that died).
    allocation.allocate_batch(redis_client, "blue", [
        Item("invoice", str(i), date(2026, 3, 1)) for i in range(3)])
    assert redis_client.llen(keys.seq_chain("invoice")) == 0
    batch(client, blue, ("invoice", "warm", "2026-03-02"))
    redis_client.ltrim(keys.seq_chain("invoice"), 0, 1)  # two of the four left unsealed
    sent = redis_counting.top_level(
        redis_client, lambda: batch(client, blue, ("invoice", "next", "2026-03-01")))
    assert sent == ["EVALSHA", "WAITAOF", "EVALSHA"]
    assert redis_client.llen(keys.seq_chain("invoice")) == 5
    assert chain.verify(redis_client, "invoice")["ok"] is True


def test_a_seal_that_fell_far_behind_is_caught_up_by_reading(client, admin, redis_client):
    blue = register(client, admin, "blue")
    batch(client, blue, ("invoice", "warm", "2026-03-01"))
    # 70 events nobody sealed (seals failing for a while): the script does not return them all
    # with every allocation; the seal after the response reads and seals everything.
    allocation.allocate_batch(redis_client, "blue", [
        Item("invoice", str(i), date(2026, 3, 1)) for i in range(70)])
    appended: list[chain.Appended] = []
    allocation.allocate(redis_client, "blue", "invoice", "probe", date(2026, 3, 1),
                        appended=appended)
    assert [(a.length, a.events) for a in appended] == [(1, ())]
    sent = redis_counting.top_level(
        redis_client, lambda: batch(client, blue, ("invoice", "next", "2026-03-01")))
    assert sent == ["EVALSHA", "WAITAOF", "LLEN", "LINDEX", "LRANGE", "EVALSHA"]
    assert redis_client.llen(keys.seq_chain("invoice")) == 73
    assert chain.verify(redis_client, "invoice")["ok"] is True


def test_seal_appended_is_idempotent_and_never_seals_an_event_out_of_place(redis_client):
    appended: list[chain.Appended] = []
    allocation.allocate_batch(redis_client, "blue", [
        Item("invoice", str(i), date(2026, 3, 1)) for i in range(3)], appended=appended)
    (only,) = appended
    assert (only.sequence, only.length, only.head, len(only.events)) == ("invoice", 0, "", 3)
    assert chain.seal_appended(redis_client, only) == 3
    sealed = redis_client.lrange(keys.seq_chain("invoice"), 0, -1)
    assert chain.seal_appended(redis_client, only) == 3  # a second sealer: nothing written
    assert redis_client.lrange(keys.seq_chain("invoice"), 0, -1) == sealed
    # Events reported out of place (a tampered list read back) are left to seal(), which
    # stops at the first event whose seq is not its index; so is a script that returned no
    # events (more were waiting than it returns).
    shifted = chain.Appended("default", "invoice", 1, sealed[0], only.events)
    assert chain.seal_appended(redis_client, shifted) == 3
    redis_client.ltrim(keys.seq_chain("invoice"), 0, 0)
    assert chain.seal_appended(redis_client, chain.Appended(
        "default", "invoice", 1, sealed[0], ())) == 3
    assert redis_client.lrange(keys.seq_chain("invoice"), 0, -1) == sealed
    assert chain.verify(redis_client, "invoice")["ok"] is True


def test_a_number_of_series_eu_is_sealed_onto_eu_s_own_chain(redis_client):
    """The chain length and head a new number's seal continues from are eu's: with default's
    chain as long as eu's, default's head would be hashed into eu's chain and break it."""
    from coordinator.numbering import series

    series.create_series(redis_client, "eu", "EU entity")
    series.leave(redis_client, "default", "green")
    series.join(redis_client, "eu", "green")
    for system, reference in (("blue", "b1"), ("green", "g1"), ("green", "g2")):
        appended: list[chain.Appended] = []
        allocation.allocate_batch(redis_client, system, [Item("invoice", reference,
                                                              date(2026, 3, 1))],
                                  hints=Hints(series_of={"green": "eu"}), appended=appended)
        for each in appended:
            chain.seal_appended(redis_client, each)
    assert redis_client.llen(keys.seq_chain("invoice", "eu")) == 2
    assert chain.verify(redis_client, "invoice", series="eu")["ok"] is True
    assert chain.verify(redis_client, "invoice")["ok"] is True


def test_seal_appended_seals_the_rest_when_another_sealer_sealed_part(redis_client):
    appended: list[chain.Appended] = []
    allocation.allocate_batch(redis_client, "blue", [
        Item("invoice", str(i), date(2026, 3, 1)) for i in range(4)], appended=appended)
    (whole,) = appended
    # Another process sealed the first two meanwhile (from what its script returned).
    first_two = chain.Appended("default", "invoice", 0, "", whole.events[:2])
    assert chain.seal_appended(redis_client, first_two) == 2
    sent = redis_counting.top_level(redis_client,
                                    lambda: chain.seal_appended(redis_client, whole))
    assert sent == ["EVALSHA", "EVALSHA"]  # refused at 0 (the chain is at 2), then 2..3
    assert redis_client.llen(keys.seq_chain("invoice")) == 4
    assert chain.verify(redis_client, "invoice")["ok"] is True


def test_seal_appended_falls_back_to_reading_the_chain_of_its_own_series(redis_client):
    """When what the script returned cannot be sealed as is, the series' own chain is read
    and sealed (another series' is left alone)."""
    series_mod.create_series(redis_client, "eu")
    series_mod.join(redis_client, "eu", "blue")
    appended: list[chain.Appended] = []
    allocation.allocate_batch(redis_client, "blue", [
        Item("invoice", str(i), date(2026, 3, 1)) for i in range(3)],
        None, Hints(series_of={"blue": "eu"}), appended=appended)
    (whole,) = appended
    ours = keys.seq_chain("invoice", "eu")
    assert chain.seal_appended(redis_client, chain.Appended(  # out of place
        "eu", "invoice", 1, "", whole.events[:1])) == 3
    redis_client.ltrim(ours, 0, 0)
    assert chain.seal_appended(redis_client, chain.Appended(  # no events returned
        "eu", "invoice", 1, "", ())) == 3
    redis_client.ltrim(ours, 0, 0)
    last = chain.Appended("eu", "invoice", 2, "", whole.events[2:])
    assert chain.seal_appended(redis_client, last) == 3  # the chain shorter than it saw
    assert chain.verify(redis_client, "invoice", series="eu")["events"] == 3
    assert not redis_client.exists(keys.seq_chain("invoice"))


def test_submit_returns_at_once_and_waiting_work_is_coalesced_into_one_seal(
        redis_client, monkeypatch):
    sealer, entered, release, calls = chain.Sealer(), threading.Event(), threading.Event(), []
    real = chain.seal_appended

    def slow_first(client, appended):
        calls.append(len(appended.events))
        if len(calls) == 1:
            entered.set()
            assert release.wait(30)
        return real(client, appended)

    monkeypatch.setattr(chain, "seal_appended", slow_first)

    def take(reference):
        appended: list[chain.Appended] = []
        allocation.allocate_batch(redis_client, "blue", [
            Item("invoice", reference, date(2026, 3, 1))], appended=appended)
        return appended[0]

    sealer.submit(redis_client, take("a"))  # returns at once: the sealer's thread seals
    assert entered.wait(30)
    # While the thread seals a's event, two more allocations hand theirs over and return.
    b = take("b")
    sealer.submit(redis_client, b)
    sealer.submit(redis_client, take("c"))
    sealer.submit(redis_client, b)  # b's request thread handing over after c's: c is kept
    assert calls == [1]
    assert sealer.drain(0.01) is False  # a's seal is still held: drain gives up, says so
    release.set()
    assert sealer.drain(30)
    # The thread then sealed only the latest events it was handed: c's script returned
    # every unsealed event (a's, b's, its own), so one more SEAL covers both.
    assert calls == [1, 3]
    assert redis_client.llen(keys.seq_chain("invoice")) == 3
    assert chain.verify(redis_client, "invoice")["ok"] is True


def test_the_sealer_thread_ends_when_idle_and_the_next_submit_starts_another(redis_client):
    sealer, appended = chain.Sealer(idle=0.05), []
    for reference in ("a", "b"):
        allocation.allocate_batch(redis_client, "blue", [
            Item("invoice", reference, date(2026, 3, 1))], appended=appended)
        sealer.submit(redis_client, appended.pop())
        thread = sealer._thread
        thread.join(30)  # nothing more to seal: it ends after `idle` seconds
        assert not thread.is_alive()
    assert redis_client.llen(keys.seq_chain("invoice")) == 2


def test_a_failed_seal_loses_nothing_the_next_one_seals_it(redis_client, monkeypatch, caplog):
    sealer, real, calls = chain.Sealer(), chain.seal_appended, []

    def refused_once(client, appended):
        calls.append(appended)
        if len(calls) == 1:
            raise chain.redis.ConnectionError("Redis went away")  # as a failover would
        return real(client, appended)

    monkeypatch.setattr(chain, "seal_appended", refused_once)
    appended: list[chain.Appended] = []
    allocation.allocate_batch(redis_client, "blue", [
        Item("invoice", str(i), date(2026, 3, 1)) for i in range(2)], appended=appended)
    sealer.submit(redis_client, appended.pop())
    assert sealer.drain(30)
    assert redis_client.llen(keys.seq_chain("invoice")) == 0  # logged, left unsealed
    # The warning names the chain and carries the error (an operator's only trace of it).
    (warned,) = [r for r in caplog.records if r.name == "coordinator.numbering.chain"]
    assert warned.getMessage() == (
        "sealing default/invoice failed; sealed by the next allocation or verify")
    assert warned.exc_info[1].args == ("Redis went away",)
    allocation.allocate_batch(redis_client, "blue", [Item("invoice", "next", date(2026, 3, 1))],
                              appended=appended)
    sealer.submit(redis_client, appended.pop())
    assert sealer.drain(30)
    # The next allocation's script returned the earlier events too: one seal, all three.
    assert [len(each.events) for each in calls] == [2, 3]
    assert redis_client.llen(keys.seq_chain("invoice")) == 3
    assert chain.verify(redis_client, "invoice")["ok"] is True


def test_a_confirm_is_sealed_after_its_response(client, admin, redis_client):
    blue = register(client, admin, "blue")
    (taken,) = batch(client, blue, ("invoice", "a", "2026-03-01"))
    confirmed = client.post(f"/v1/allocations/{taken['id']}/confirm", headers=blue,
                            json={"invoicenum": taken["formatted"]})
    assert confirmed.status_code == 200
    sealed(client)
    # Sealed by the sealer thread after the confirm's response, before any verify.
    assert redis_client.llen(keys.seq_chain("invoice")) == 2


def test_a_seal_that_must_read_wins_over_one_that_would_not(redis_client):
    sealer, entered, release = chain.Sealer(), threading.Event(), threading.Event()
    appended: list[chain.Appended] = []
    allocation.allocate_batch(redis_client, "blue", [
        Item("invoice", str(i), date(2026, 3, 1)) for i in range(3)], appended=appended)
    (first,) = appended
    real, sealed = chain.seal_appended, []

    def blocking(client, work):
        sealed.append(work)
        if len(sealed) == 1:
            entered.set()
            assert release.wait(30)
        return real(client, work)

    original, chain.seal_appended = chain.seal_appended, blocking
    try:
        sealer.submit(redis_client, first)
        assert entered.wait(30)
        # Handed over while the first seals: events of two scripts, then one that returned
        # none (sealing had fallen behind): that one's seal reads, so it is the one kept.
        behind = chain.Appended("default", "invoice", 0, "", ())
        sealer.submit(redis_client, behind)
        sealer.submit(redis_client, chain.Appended("default", "invoice", 0, "", first.events))
        release.set()
        assert sealer.drain(30)
    finally:
        chain.seal_appended = original
    assert sealed == [first, behind]
    assert redis_client.llen(keys.seq_chain("invoice")) == 3


def test_numbers_of_a_batch_reach_the_unconfirmed_index_and_the_gaps_report(redis_client):
    from coordinator.numbering import ledger
    from coordinator.ops import unconfirmed

    taken = allocation.allocate_batch(redis_client, "blue", [
        Item("invoice", str(i), date(2026, 3, 1)) for i in range(4)])
    for entry, _ in taken[:2]:
        allocation.transition(redis_client, entry["id"], "confirm", entry["formatted"],
                              actor_kind="agent", actor_system="blue", actor="agent:blue")
    later = clock.utcnow() + timedelta(hours=2)
    gaps = ledger.gaps(redis_client, "invoice", "2026", 3600, now=later)
    assert sorted(g["number"] for g in gaps if g["kind"] == "unconfirmed") == [3, 4]
    assert unconfirmed.refresh(redis_client, 3600, now=later)["invoice"] == 2


def test_a_batch_counts_its_allocations_under_its_own_series(client, admin):
    from prometheus_client import REGISTRY

    def count(result):
        return REGISTRY.get_sample_value("invoice_sync_allocations_total", {
            "series": "acme", "sequence": "invoice", "result": result}) or 0.0

    assert client.post("/v1/series", headers=admin, json={"name": "acme"}).status_code == 201
    orange = register(client, admin, "orange", "acme")
    new, replay = count("new"), count("replay")
    batch(client, orange, ("invoice", "a", "2026-03-01"), ("invoice", "b", "2026-03-01"),
          ("invoice", "a", "2026-03-01"))
    assert (count("new"), count("replay")) == (new + 2, replay + 1)
