"""Batch allocation against a real Valkey: order, all-or-nothing, replays, concurrency,
durability after kill -9, and the rule that a batch numbers exactly as one-by-one would."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.exceptions import Conflict
from coordinator.numbering import allocation, iter_ledger
from coordinator.numbering import api as numbering_api
from coordinator.numbering.allocation import BatchConflict, Hints, Item
from coordinator.numbering.sequences import MAX_NUMBER
from coordinator.ops.embedded import ValkeyServer
from tests.support import initialise_numbering, snapshot

pytestmark = pytest.mark.integration


def batch(client, headers, *items):
    return client.post("/v1/allocation-batches", headers=headers, json={"items": [
        {"document": doc, "reference": ref, "date": day} for doc, ref, day in items]})


def _counted(result: str, series: str = "default") -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("invoice_sync_allocations_total", {
        "series": series, "sequence": "invoice", "result": result}) or 0.0


def test_batch_numbers_in_order_and_a_replayed_batch_answers_the_same(client, agent,
                                                                     monkeypatch):
    blue = agent("blue")
    counted = _counted("new"), _counted("replay")  # docs/MONITORING.md
    items = [("invoice", "a", "2026-02-01"), ("credit_note", "b", "2026-02-02"),
             ("invoice", "c", "2026-02-03")]
    first = batch(client, blue, *items)
    assert first.status_code == 200
    taken = first.get_json()["items"]
    assert [(e["id"], e["reference"], e["replay"]) for e in taken] == [
        ("invoice:2026:1", "a", False), ("credit_note:2026:1", "b", False),
        ("invoice:2026:2", "c", False)]
    again = batch(client, blue, *items).get_json()["items"]
    assert [{**e, "replay": False} for e in again] == taken
    assert all(e["replay"] for e in again)
    # each item counted once, as taken or replayed (invoice: 2 new, then 2 replays)
    assert (_counted("new"), _counted("replay")) == (counted[0] + 2, counted[1] + 2)
    # a single allocation after the batch continues the sequence
    single = client.post("/v1/allocations", headers=blue, json={
        "document": "invoice", "reference": "d", "date": "2026-02-04"})
    assert single.get_json()["number"] == 3
    # an item without a date is dated today (UTC), as a single allocation is
    monkeypatch.setattr(numbering_api, "utcnow", lambda: datetime(2027, 3, 1, 12, tzinfo=UTC))
    undated = client.post("/v1/allocation-batches", headers=blue, json={"items": [
        {"document": "invoice", "reference": "e"}]}).get_json()["items"]
    assert [(e["id"], e["date"]) for e in undated] == [("invoice:2027:1", "2027-03-01")]


def test_same_reference_twice_in_one_batch_is_a_replay_of_its_first_item(client, agent):
    out = batch(client, agent("blue"), ("invoice", "x", "2026-01-01"),
                ("invoice", "x", "2026-01-01")).get_json()["items"]
    assert out[0]["id"] == out[1]["id"] == "invoice:2026:1"
    assert (out[0]["replay"], out[1]["replay"]) == (False, True)


def test_one_bad_item_takes_no_number_of_the_batch(client, agent, valkey):
    blue = agent("blue")
    assert batch(client, blue, ("invoice", "old", "2025-12-31")).status_code == 200
    before = snapshot(valkey.url)
    response = batch(client, blue, ("invoice", "n1", "2026-01-01"),
                     ("invoice", "n2", "2026-01-01"), ("invoice", "old", "2026-01-02"))
    assert response.status_code == 409
    body = response.get_json()
    assert body["errors"]["json"]["items"]["2"] == {
        "date": ["Does not match the period of the existing allocation."]}
    assert "invoice:2025:1" in body["message"]
    assert snapshot(valkey.url) == before


def test_exhausted_in_the_middle_takes_nothing(client, agent, admin, valkey):
    blue = agent("blue")
    patched = client.patch("/v1/sequences/invoice", headers=admin,
                           json={"format": "I{YEAR}-{NUMBER}", "padding": 1, "next_number": 8})
    assert patched.status_code == 200, patched.get_json()
    before = snapshot(valkey.url)
    response = batch(client, blue, *[("invoice", f"r{i}", "2026-01-01") for i in range(3)])
    assert response.status_code == 409
    reason = ("sequence exhausted: invoice cannot issue a number after 9 within its padding "
              f"(or the cap {MAX_NUMBER}); raise the padding or change the format's period")
    body = response.get_json()
    assert body["errors"] == {"json": {"items": {"2": {"reference": [reason]}}}}
    assert body["message"] == (
        f"Item 2 cannot be numbered, so no number of this batch was taken: {reason}")
    assert snapshot(valkey.url) == before


def test_a_number_the_series_already_printed_is_refused_by_name(client, agent, admin,
                                                                redis_client, valkey):
    """The formatted-number index holds the next string (e.g. a number recovered from a
    WHMCS): the batch is refused with the string and its owner named, nothing taken."""
    blue = agent("blue")
    patched = client.patch("/v1/sequences/invoice", headers=admin,
                           json={"format": "I{YEAR}-{NUMBER}", "padding": 1, "next_number": 5})
    assert patched.status_code == 200, patched.get_json()
    redis_client.hset(keys.series_formatted("default"), "I2026-5", "credit_note:2026:3")
    before = snapshot(valkey.url)
    response = batch(client, blue, ("invoice", "r0", "2026-01-01"))
    assert response.status_code == 409
    reason = ("The next invoice number would print as 'I2026-5', which series 'default' "
              "already issued (credit_note:2026:3); no number was taken. Raise next_number "
              "or change the format so the series prints a new string")
    body = response.get_json()
    assert body["errors"] == {"json": {"items": {"0": {"reference": [reason]}}}}
    assert body["message"] == (
        f"Item 0 cannot be numbered, so no number of this batch was taken: {reason}")
    assert snapshot(valkey.url) == before


@pytest.mark.parametrize("body", [{"items": []}, {"items": [{"document": "invoice"}]},
                                  {"items": [{"document": "invoice", "reference": "1"}] * 1001},
                                  {"items": [{"document": "bill", "reference": "1"}]}])
def test_bad_batch_body_is_400_and_changes_nothing(client, agent, valkey, body):
    blue = agent("blue")
    before = snapshot(valkey.url)
    response = client.post("/v1/allocation-batches", headers=blue, json=body)
    assert response.status_code in (400, 422)
    assert set(response.get_json()) >= {"code", "status", "message", "errors"}
    assert snapshot(valkey.url) == before


def test_batches_and_single_allocations_at_once_never_share_a_number(client, agent,
                                                                      redis_client):
    blue = agent("blue")

    def work(worker: int):
        if worker % 2:
            return [e["id"] for e in batch(client, blue, *[
                ("invoice", f"b{worker}-{i}", "2026-05-05") for i in range(20)]).get_json()[
                "items"]]
        return [client.post("/v1/allocations", headers=blue, json={
            "document": "invoice", "reference": f"s{worker}-{i}", "date": "2026-05-05"}
        ).get_json()["id"] for i in range(10)]

    with ThreadPoolExecutor(8) as pool:
        ids = [i for got in pool.map(work, range(16)) for i in got]
    assert len(ids) == len(set(ids)) == 8 * 20 + 8 * 10
    numbers = [e["number"] for e in iter_ledger(redis_client, "invoice", "2026")]
    assert numbers == list(range(1, len(ids) + 1))


@pytest.mark.faults
def test_acknowledged_batch_survives_kill_9(tmp_path):
    server = ValkeyServer(tmp_path / "v").start()
    try:
        setup = redis.Redis.from_url(server.url, decode_responses=True)
        token = auth.new_token(auth.AGENT)
        setup.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("blue"))
        initialise_numbering(setup)
        setup.close()
        headers = {"Authorization": f"Bearer {token}"}
        client = create_app({"TESTING": True, "REDIS_URL": server.url}).test_client()
        items = [("invoice", f"r{i}", "2026-03-03") for i in range(50)]
        taken = batch(client, headers, *items).get_json()["items"]
        server.kill()
        server.start()
        client = create_app({"TESTING": True, "REDIS_URL": server.url}).test_client()
        again = batch(client, headers, *items).get_json()["items"]
        assert [e["id"] for e in again] == [e["id"] for e in taken]
        reader = redis.Redis.from_url(server.url, decode_responses=True)
        assert [e["number"] for e in iter_ledger(reader, "invoice", "2026")] == list(
            range(1, 51))
        reader.close()
    finally:
        server.stop()


_ITEMS = st.lists(st.builds(
    Item, st.sampled_from(["invoice", "credit_note"]), st.sampled_from("abcdef"),
    st.sampled_from([date(2025, 12, 31), date(2026, 1, 1), date(2026, 7, 9)])),
    min_size=1, max_size=12)


def _one_by_one(client, items):
    hints, out = Hints(), []
    for index, item in enumerate(items):
        try:
            out.append(allocation.allocate(client, "blue", item.document, item.reference,
                                           item.day, hints=hints))
        except Conflict:
            return index, out
    return None, out


def _events_without_time(client):
    return {sequence: [{k: v for k, v in json.loads(raw).items() if k != "at"}
                       for raw in client.lrange(keys.seq_events(sequence), 0, -1)]
            for sequence in ("invoice", "credit_note")}


def _without_time(taken):
    return [({k: v for k, v in entry.items() if k != "issued_at"}, new) for entry, new in taken]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=_ITEMS, items=_ITEMS)
def test_a_batch_numbers_exactly_as_one_by_one(redis_client, history, items):
    redis_client.flushall()
    initialise_numbering(redis_client)
    _one_by_one(redis_client, history)
    failed_at, expected = _one_by_one(redis_client, items)
    after_singles = snapshot(redis_client, skip=(b"{ser:default}:invoice:stats",
                                                 b"{ser:default}:credit_note:stats"))
    events_after_singles = _events_without_time(redis_client)
    redis_client.flushall()
    initialise_numbering(redis_client)
    _one_by_one(redis_client, history)
    before = snapshot(redis_client)
    try:
        got = allocation.allocate_batch(redis_client, "blue", items, hints=Hints())
    except BatchConflict as refused:
        assert refused.index == failed_at
        assert snapshot(redis_client) == before
        return
    assert failed_at is None
    assert _without_time(got) == _without_time(expected)
    assert snapshot(redis_client, skip=(b"{ser:default}:invoice:stats",
                                        b"{ser:default}:credit_note:stats")).keys() == \
        after_singles.keys()
    # The audit ledger's events too: the same issued events, in the same order and places.
    assert _events_without_time(redis_client) == events_after_singles


def test_a_full_batch_of_long_references_fits_its_body_limit(client, agent):
    # 1000 items of 128-character references: about 170 KB, past the general 64 KiB limit
    items = [("invoice", f"{i:04d}" + "x" * 124, "2026-03-01") for i in range(1000)]
    response = batch(client, agent("blue"), *items)
    assert response.status_code == 200, response.get_json()
    assert [e["number"] for e in response.get_json()["items"]] == list(range(1, 1001))


def test_a_larger_body_is_413_in_the_error_shape(client, agent, valkey):
    blue = agent("blue")
    before = snapshot(valkey.url)
    response = client.post("/v1/allocation-batches", headers=blue,
                           data=b'{"items": [' + b" " * (1024 * 1024) + b"]}",
                           content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["code"] == 413
    assert snapshot(valkey.url) == before
