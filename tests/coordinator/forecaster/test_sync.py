"""Syncs through a real RQ worker against the fake WHMCS over HTTP, on real Valkey."""

from __future__ import annotations

import contextlib
import threading
import tracemalloc
import zlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.whmcs import MAX_INVOICE_ID
from coordinator.exceptions import Conflict
from coordinator.forecaster import jobs, money, records, store, sync
from coordinator.forecaster.connections import with_decoding
from coordinator.warnings import store as warnings
from tests.coordinator.forecaster.conftest import expected_aggregates, stored_aggregates

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]


def run(redis_client, work, name, mode="missing"):
    record = jobs.request_sync(redis_client, name, mode)
    work()
    return records.get(redis_client, record["id"])


def test_full_sync_stores_exactly_what_whmcs_has(redis_client, fake, register, work):
    fake.app.seed(1234, seed=7)
    register("blue", fake, step=100)
    record = run(redis_client, work, "blue", "full")
    assert record["state"] == "done", record
    assert record["invoices"] == 1234 and record["inserted"] == 1234
    assert record["total_hint"] == 1234 and record["finished_at"]
    snapshot = fake.app.invoices_snapshot()
    assert sorted(store.iter_stored_ids(redis_client, "blue")) == [i["id"] for i in snapshot]
    assert stored_aggregates(redis_client, "blue") == expected_aggregates(snapshot)
    stored = store.get(redis_client, "blue", snapshot[5]["id"])
    assert stored.invoicenum == snapshot[5]["invoicenum"]
    assert money.from_minor(stored.total, stored.currency) == Decimal(snapshot[5]["total"])


def test_second_sync_with_nothing_new_makes_one_request(redis_client, fake, register, work):
    fake.app.seed(500, seed=1)
    register("blue", fake, step=50)
    assert run(redis_client, work, "blue")["state"] == "done"
    before = fake.app.calls["GetInvoices"]
    record = run(redis_client, work, "blue")
    assert record["state"] == "done" and record["invoices"] == 0
    assert fake.app.calls["GetInvoices"] - before == 1


def test_sync_picks_up_new_invoices_with_calls_proportional(redis_client, fake, register, work):
    fake.app.seed(1000, seed=2)
    register("blue", fake, step=100)
    run(redis_client, work, "blue", "full")
    for _ in range(150):
        fake.app.add_invoice(subtotal="10.00", tax="2.10", status="Paid", currencycode="EUR")
    before = fake.app.calls["GetInvoices"]
    record = run(redis_client, work, "blue")
    assert record["state"] == "done" and record["inserted"] == 150
    assert fake.app.calls["GetInvoices"] - before == 2  # 150 new ones fit in two pages of 100
    assert stored_aggregates(redis_client, "blue") == expected_aggregates(
        fake.app.invoices_snapshot())


def test_full_sync_moves_aggregates_for_changed_statuses(redis_client, fake, register, work):
    ids = fake.app.seed(400, seed=3)
    register("blue", fake)
    run(redis_client, work, "blue", "full")
    unpaid = [i["id"] for i in fake.app.invoices_snapshot() if i["status"] == "Unpaid"][:20]
    for invoice_id in unpaid:
        fake.app.set_status(invoice_id, "Paid")
    fake.app.set_status(ids[0], "Cancelled")
    fake.app.delete_invoice(ids[1])
    record = run(redis_client, work, "blue", "full")
    assert record["state"] == "done"
    assert record["updated"] >= 20 and record["deleted"] == 1
    snapshot = fake.app.invoices_snapshot()
    assert stored_aggregates(redis_client, "blue") == expected_aggregates(snapshot)
    assert store.count(redis_client, "blue") == len(snapshot)
    # Receivables follow: only invoices still Unpaid are open.
    open_n = sum(c.n for c in store.read_receivables(redis_client, "blue"))
    assert open_n == sum(1 for i in snapshot if i["status"] == "Unpaid")


def test_no_client_data_anywhere_in_redis(redis_client, fake, register, work):
    fake.app.seed(300, seed=4)
    fake.app.add_invoice(subtotal="5.00", notes="Secret note Zebulon", paymentmethod="zz-gateway")
    register("blue", fake)
    run(redis_client, work, "blue", "full")
    forbidden = set()
    for inv in fake.app.invoices_snapshot():
        forbidden |= {inv["firstname"], inv["lastname"], inv["companyname"], inv["notes"],
                      inv["paymentmethod"]}
    forbidden.discard("")
    forbidden |= {"userid", "firstname", "lastname", "companyname", "paymentmethod"}
    raw = with_decoding(redis_client, False)
    dump: list[bytes] = []
    for key in raw.scan_iter(count=1000):
        kind = raw.type(key)
        if kind == b"hash":
            dump += [k + b"=" + v for k, v in raw.hgetall(key).items()]
        elif kind == b"string":
            dump.append(raw.get(key) or b"")
        elif kind == b"list":
            dump += raw.lrange(key, 0, -1)
        elif kind == b"zset":
            dump += raw.zrange(key, 0, -1)
        elif kind == b"set":
            dump += list(raw.smembers(key))
        dump.append(key)
    # RQ keeps job data zlib-compressed: look inside too.
    for value in list(dump):
        with contextlib.suppress(zlib.error):
            dump.append(zlib.decompress(value))
    text = b"\n".join(dump)
    assert b"Secret note Zebulon" not in text
    leaked = sorted(word for word in forbidden if word.encode() in text)
    assert leaked == []


FAULTS = {
    "bad credentials": (dict(secret_override="wrong-secret-000"), "whmcs_auth",
                        "rejected the API credentials"),
    "missing permission": (dict(allowed_actions=["GetClients"]), "whmcs_permission",
                           "does not allow API action"),
    "ip not allowed": (dict(allowed_ips=["198.51.100.1"]), "whmcs_ip_not_allowed",
                       "127.0.0.1"),
    "access key": (dict(access_key="the-real-key-1234", access_key_sent="wrong-key-5678"),
                   "whmcs_access_key", "rejected the access key"),
    "banned": (dict(banned_ips=["127.0.0.1"]), "whmcs_ip_banned", "banned"),
    "html page": (dict(fault=("html", {})), "whmcs_bad_response", "HTML page"),
    "http 500": (dict(fault=("status", {"status": 500})), "whmcs_bad_response", "HTTP 500"),
}


@pytest.mark.parametrize("case", sorted(FAULTS))
def test_whmcs_errors_fail_the_job_with_a_clear_warning(case, redis_client, fake, register,
                                                        work):
    setup, code, text = FAULTS[case]
    fake.app.seed(10)
    fields = {}
    if "secret_override" in setup:
        fields["api_secret"] = setup["secret_override"]
    if "allowed_actions" in setup:
        fake.app.allowed_actions = {a.lower() for a in setup["allowed_actions"]}
    if "allowed_ips" in setup:
        fake.app.allowed_ips = set(setup["allowed_ips"])
        fake.app.seen_ip = "127.0.0.1"
    if "access_key" in setup:
        fake.app.access_key = setup["access_key"]
        fields["access_key"] = setup["access_key_sent"]
    if "banned_ips" in setup:
        fake.app.banned_ips = set(setup["banned_ips"])
    if "fault" in setup:
        kind, kw = setup["fault"]
        fake.app.inject_fault(kind, **kw)
    register("blue", fake, **fields)
    record = run(redis_client, work, "blue")
    assert record["state"] == "failed"
    assert record["error_code"] == code
    assert text in record["error"]
    found = warnings.get(redis_client, "sync_failed:blue")
    assert found["code"] == code and text in found["message"] and not found["acked"]
    assert store.count(redis_client, "blue") == 0


def test_timeout_becomes_a_failed_job(redis_client, fake, register, settings):
    fake.app.seed(10)
    register("blue", fake)
    fake.app.inject_fault("delay", delay=2.0)
    record = jobs.request_sync(redis_client, "blue", "missing")

    def resolve(client, system, config):
        source, step = jobs.default_resolver(client, system, config)
        source.timeout = (1.0, 0.2)
        return source, step

    final = jobs.execute(redis_client, record["id"], settings, resolve=resolve)
    assert final["state"] == "failed" and final["error_code"] == "whmcs_timeout"
    assert warnings.get(redis_client, "sync_failed:blue")["code"] == "whmcs_timeout"


def test_reset_mid_run_then_rerun_finishes_without_double_counting(redis_client, fake,
                                                                    register, work):
    fake.app.seed(1000, seed=5)
    register("blue", fake, step=100)
    # The 10th request fails: the first six pages (595 rows, >= WRITE_ROWS) were stored.
    fake.app.inject_fault("reset", nth=10)
    first = run(redis_client, work, "blue", "full")
    assert first["state"] == "failed" and first["error_code"] == "whmcs_connection"
    assert 0 < store.count(redis_client, "blue") < 1000
    assert sync.high_water(redis_client, "blue") == 0  # not advanced by a crashed run
    second = run(redis_client, work, "blue", "full")
    assert second["state"] == "done"
    assert stored_aggregates(redis_client, "blue") == expected_aggregates(
        fake.app.invoices_snapshot())


def test_dead_worker_frees_the_system_and_a_rerun_completes(redis_client, fake, register,
                                                            work):
    fake.app.seed(300, seed=6)
    register("blue", fake)
    record = jobs.request_sync(redis_client, "blue", "missing")
    # A worker claimed it and died mid-run: half the invoices stored, lock lapsed, no final state.
    records.update(redis_client, record["id"], state="running")
    store.upsert(redis_client, "blue", _first_invoices(fake, 150))
    redis_client.delete("{sys:blue}:sync:lock")
    assert records.get(redis_client, record["id"])["state"] == "failed"
    assert records.get(redis_client, record["id"])["error_code"] == "worker_lost"
    work()  # the RQ job of the dead sync may still be in the queue: it must not clobber
    again = run(redis_client, work, "blue")
    assert again["state"] == "done"
    assert stored_aggregates(redis_client, "blue") == expected_aggregates(
        fake.app.invoices_snapshot())


def _first_invoices(fake, n):
    from agent import WhmcsClient
    from tests.coordinator.forecaster.conftest import IDENT, SECRET

    with WhmcsClient(fake.url, IDENT, SECRET) as client:
        return list(client.get_invoices(0, n).invoices)


def test_two_concurrent_requests_give_one_run_and_one_conflict(redis_client, fake, register):
    fake.app.seed(10)
    register("blue", fake)
    barrier, outcomes = threading.Barrier(2), []

    def request():
        barrier.wait()
        try:
            outcomes.append(jobs.request_sync(redis_client, "blue", "full")["id"])
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("conflict") == 1
    assert len(jobs.queue(redis_client)) == 1


def test_mixed_currencies_raise_a_warning(redis_client, fake, register, work):
    fake.app.add_invoice(subtotal="10.00", currencycode="EUR", status="Paid")
    fake.app.add_invoice(subtotal="10.00", currencycode="USD", status="Paid")
    register("blue", fake)
    assert run(redis_client, work, "blue")["state"] == "done"
    warning = warnings.get(redis_client, "mixed_currencies:blue")
    assert "EUR (1)" in warning["message"] and "USD (1)" in warning["message"]


def test_full_sync_memory_follows_the_number_of_invoices_not_their_ids(
    redis_client, fake, register, settings
):
    # WHMCS's AUTO_INCREMENT bumped to 2e9: one invoice there once made a 250 MB bitmap.
    n = 1000
    fake.app.seed(n - 1, seed=8)
    fake.app.set_next_id(2_000_000_000)
    fake.app.add_invoice(subtotal="10.00", status="Paid")
    register("blue", fake, step=100)
    record = jobs.request_sync(redis_client, "blue", "full")
    tracemalloc.start()
    try:
        final = jobs.execute(redis_client, record["id"], settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert final["state"] == "done", final
    assert store.get(redis_client, "blue", 2_000_000_000) is not None
    assert store.count(redis_client, "blue") == n
    # Everything the run allocates (pages, parsing, storing, the fake WHMCS serving them) stays
    # within a fixed overhead plus a few KiB per invoice (measured: ~2 MiB in all; the bitmap
    # alone took 250 MB and the run 767 MB).
    assert peak <= 4 * 2**20 + 4 * 2**10 * n, f"peak {peak} bytes for {n} invoices"


def test_an_invoice_id_beyond_what_whmcs_can_hold_fails_the_sync(redis_client, fake, register,
                                                                  work):
    fake.app.seed(10, seed=9)
    fake.app.set_next_id(MAX_INVOICE_ID + 1)
    fake.app.add_invoice(subtotal="10.00", status="Paid")
    register("blue", fake, step=100)
    record = run(redis_client, work, "blue", "full")
    assert record["state"] == "failed"
    assert record["error_code"] == "whmcs_bad_response"
    assert record["error"] == (
        f"WHMCS sent invoice id {MAX_INVOICE_ID + 1}, outside 1 to {MAX_INVOICE_ID} (what "
        "WHMCS's invoice table can hold). Check the WHMCS version and any module that rewrites "
        "API output."
    )
    assert store.count(redis_client, "blue") == 0


@given(pages=st.lists(st.lists(st.integers(min_value=1, max_value=MAX_INVOICE_ID), max_size=8),
                      max_size=8),
       probes=st.lists(st.integers(min_value=0, max_value=MAX_INVOICE_ID + 1), max_size=8))
def test_the_ids_a_full_sync_saw_answer_like_a_set(pages, probes):
    # In order (the normal case) or not (a WHMCS that sorts oddly), with repeats or not.
    seen, expected = sync._SeenIds(), set()
    for page in pages:
        seen.extend(page)
        expected.update(page)
    assert seen.count() == len(expected)
    for invoice_id in [*probes, *expected]:
        assert (invoice_id in seen) == (invoice_id in expected)


def test_the_ids_a_full_sync_saw_are_sorted_only_when_out_of_order_and_then_once(monkeypatch):
    # What keeps a full sync at 8 bytes per invoice id: ids that arrive in order (as WHMCS
    # pages them) are never copied into a set and sorted; out-of-order ids are, once, not on
    # every lookup (the sync looks up every stored id: a sort per lookup is quadratic).
    sorts = []

    def counting_sorted(values):
        sorts.append(1)
        return sorted(values)

    monkeypatch.setattr(sync, "sorted", counting_sorted, raising=False)
    in_order = sync._SeenIds()
    in_order.extend(range(1, 101))
    in_order.extend(range(101, 201))
    assert in_order.count() == 200
    assert [i in in_order for i in (0, 1, 150, 200, 201)] == [False, True, True, True, False]
    assert sorts == []

    shuffled = sync._SeenIds()
    shuffled.extend([5, 3, 9])
    shuffled.extend([1, 3])
    assert shuffled.count() == 4
    assert [i for i in range(12) if i in shuffled] == [1, 3, 5, 9]
    assert shuffled.count() == 4
    assert len(sorts) == 1
