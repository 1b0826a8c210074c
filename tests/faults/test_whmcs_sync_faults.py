"""WHMCS trouble in the middle of a sync: the job fails with WHMCS's reason, the store stays
consistent, and once WHMCS behaves again a rerun leaves exactly what a clean sync leaves.

A fake WHMCS over loopback HTTP holds a few thousand invoices; the system's ``step`` is small, so
a sync is dozens of pages. For each kind of trouble (a read timeout, HTTP 500, a firewall's HTML
page, a connection reset half-way through a page) the same story runs:

A. a ``missing`` sync meets the trouble after a few pages and fails;
   invoices are added in WHMCS;
B. a ``missing`` sync, WHMCS healthy: must store exactly WHMCS's invoices (ids, and sums per
   month, status and currency added up here from WHMCS's own strings);
   statuses change (paid, refunded, cancelled), invoices are added and one deleted;
C. a ``full`` sync meets the trouble mid-way and fails;
   more statuses change, more invoices are added;
D. a ``full`` sync, WHMCS healthy: must leave records and aggregates byte-for-byte equal to a
   clean full sync of a second, fresh system against the same WHMCS.

After each failed run: the sync record is ``failed`` with the WHMCS-specific code and reason, the
``sync_failed`` warning carries them, the high-water mark has not moved, and the aggregates,
receivables, currency and number counters equal a recomputation (written here, independently of
upsert.lua) from the invoice records actually stored.

Timeouts need a short client timeout: those runs go through ``jobs.execute`` (what the RQ job
runs) with the real resolver, whose WHMCS client then gets a 0.25 s read timeout and a small
backoff. Every other run goes through a real RQ ``SimpleWorker``.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
import redis
from cryptography.fernet import Fernet
from rq import SimpleWorker

from coordinator import keys
from coordinator.config import load_settings
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs
from coordinator.forecaster import defaults, jobs, money, records, store, sync
from coordinator.forecaster.connections import with_decoding
from coordinator.systems import registry, secrets
from coordinator.systems.urls import UrlPolicy
from coordinator.warnings import store as warnings

pytestmark = pytest.mark.faults

IDENT, SECRET = "ident-0123456789", "secret-abcdefghijkl"

BURST = 16
"""Consecutive requests a fault hits: every attempt (1 + 3 transport retries) of every request
in flight (a full sync keeps up to three: the page and two prefetches) falls inside it, so the
trouble outlasts the retries and the run must fail. A shorter burst can be outlived by a retry
that lands after it — which is the client doing its job, not a failed run."""

READ_TIMEOUT = 0.25
"""The short read timeout of the timeout runs; the fake then sleeps ``3 ×`` that."""

# kind -> (inject_fault arguments, error_code, text the reason must contain)
FAULTS = {
    "timeout": (dict(kind="delay", delay=3 * READ_TIMEOUT), "whmcs_timeout",
                "did not answer GetInvoices within"),
    "http_500": (dict(kind="status", status=500), "whmcs_bad_response", "HTTP 500"),
    "html_firewall": (dict(kind="html"), "whmcs_bad_response", "HTML page"),
    "reset_mid_page": (dict(kind="reset"), "whmcs_connection",
                       "Connection to WHMCS at"),
}

STORE_KEYS = (keys.sys_invoices, keys.sys_aggregates, keys.sys_receivables,
              keys.sys_currencies, keys.sys_numbers)


@pytest.fixture
def settings(monkeypatch, valkey) -> dict:
    """The worker's environment: the session Valkey, a secret key, loopback http allowed."""
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_SECRET_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("INVOICE_SYNC_ALLOW_HTTP_SYSTEM_URLS", "true")
    monkeypatch.setenv("INVOICE_SYNC_ALLOW_PRIVATE_SYSTEM_URLS", "true")
    return load_settings()


@pytest.fixture
def fake():
    app = FakeWhmcs(IDENT, SECRET)
    with serve_fake_whmcs(app) as server:
        yield server


class Syncs:
    """Register systems and run their syncs (RQ worker, or ``jobs.execute`` for timeouts)."""

    def __init__(self, client: redis.Redis, settings: dict, fake) -> None:
        self.client, self.settings, self.fake = client, settings, fake
        self.times: list[str] = []

    def register(self, name: str, step: int) -> None:
        values = {"name": name, "url": self.fake.url, "api_identifier": IDENT,
                  "api_secret": SECRET, "step": step, "auto_sync": False}
        registry.create_system(self.client, secrets.fernet_from_config(self.settings), values,
                               UrlPolicy.from_config(self.settings))

    def run(self, name: str, mode: str, *, short_timeout: bool = False) -> dict:
        started = time.monotonic()
        record = jobs.request_sync(self.client, name, mode)
        if short_timeout:
            def resolve(client, system, config):
                source, step = jobs.default_resolver(client, system, config)
                source.timeout = (2.0, READ_TIMEOUT)
                for adapter in source._session.adapters.values():
                    # Same number of transport retries as in production, shorter waits.
                    adapter.max_retries = adapter.max_retries.new(backoff_factor=0.02)
                return source, step

            jobs.execute(self.client, record["id"], self.settings, resolve=resolve)
        else:
            SimpleWorker([defaults.QUEUE_NAME],
                         connection=with_decoding(self.client, False)).work(burst=True)
        self.times.append(f"{name}/{mode} {time.monotonic() - started:.2f}s")
        return records.get(self.client, record["id"])


def recomputed(client: redis.Redis, system: str) -> dict[str, dict[str, int]]:
    """Aggregates, receivables, currencies and numbers summed here from the stored records."""
    agg: dict[str, int] = defaultdict(int)
    recv: dict[str, int] = defaultdict(int)
    cur: Counter[str] = Counter()
    nums: Counter[str] = Counter()
    for inv in store.iter_stored(client, system):
        month = inv.date.strftime("%Y-%m") if inv.date else "none"
        cell = f"{month}|{inv.status}|{inv.currency}|"
        agg[cell + "n"] += 1
        agg[cell + "net"] += inv.subtotal
        agg[cell + "tax"] += inv.tax + inv.tax2
        agg[cell + "gross"] += inv.total
        if inv.status == "Unpaid":
            due = inv.duedate.isoformat() if inv.duedate else "none"
            recv[f"{due}|{inv.currency}|n"] += 1
            recv[f"{due}|{inv.currency}|gross"] += inv.total
        cur[inv.currency] += 1
        if inv.invoicenum:
            nums[inv.invoicenum] += 1
    return {"aggregates": dict(agg), "receivables": dict(recv), "currencies": dict(cur),
            "numbers": dict(nums)}


def stored_counters(client: redis.Redis, system: str) -> dict[str, dict[str, int]]:
    """The same four hashes as the store keeps them."""
    def ints(key: str) -> dict[str, int]:
        return {k: int(v) for k, v in client.hgetall(key).items()}

    return {"aggregates": ints(keys.sys_aggregates(system)),
            "receivables": ints(keys.sys_receivables(system)),
            "currencies": ints(keys.sys_currencies(system)),
            "numbers": ints(keys.sys_numbers(system))}


def assert_consistent(client: redis.Redis, system: str) -> int:
    """The counters equal a recomputation from the stored records; return the record count."""
    def nonzero(tables: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        # A sum that is zero may or may not have a field (HINCRBY only runs for a change).
        return {name: {k: v for k, v in t.items() if v} for name, t in tables.items()}

    mine = nonzero(recomputed(client, system))
    theirs = nonzero(stored_counters(client, system))
    for name in mine:
        if mine[name] != theirs[name]:
            diff = sorted(set(mine[name].items()) ^ set(theirs[name].items()))[:10]
            raise AssertionError(f"{system}: stored {name} disagree with the records: {diff}")
    return store.count(client, system)


def store_diff(client: redis.Redis, system: str, reference: str) -> list[str]:
    """Differences between two systems' stored data: records byte for byte, counters by value.

    A counter that went back to zero may keep its field where a clean sync never wrote one
    (upsert.lua drops a cell only when its count reaches zero): both mean zero.
    """
    out = []
    for key in STORE_KEYS:
        a, b = client.hgetall(key(system)), client.hgetall(key(reference))
        if key is not keys.sys_invoices:
            a = {k: v for k, v in a.items() if v != "0"}
            b = {k: v for k, v in b.items() if v != "0"}
        if a != b:
            fields = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            out.append(f"{key(system)}: {len(fields)} fields differ, e.g. "
                       + ", ".join(f"{f}: {a.get(f)!r} vs {b.get(f)!r}" for f in fields[:3]))
    return out


def assert_equals_whmcs(client: redis.Redis, system: str, snapshot: list[dict]) -> None:
    """The store holds exactly WHMCS's invoices: same ids, and per (month, status, currency)
    the same count and exact sums as added up here from WHMCS's own strings."""
    assert sorted(store.iter_stored_ids(client, system)) == [i["id"] for i in snapshot]
    assert assert_consistent(client, system) == len(snapshot)
    expected: dict = defaultdict(lambda: [0, Decimal(0), Decimal(0), Decimal(0)])
    for inv in snapshot:
        cell = expected[(inv["date"][:7], inv["status"], inv["currencycode"])]
        cell[0] += 1
        cell[1] += Decimal(inv["subtotal"])
        cell[2] += Decimal(inv["tax"]) + Decimal(inv["tax2"])
        cell[3] += Decimal(inv["total"])
    stored = {(c.month, c.status, c.currency):
              [c.n, *(money.from_minor(v, c.currency) for v in (c.net, c.tax, c.gross))]
              for c in store.read_aggregates(client, system)}
    assert stored == dict(expected)


def change_statuses(app: FakeWhmcs, rng: random.Random, count: int) -> Counter:
    """Pay, refund and cancel some invoices, as customers and admins do between syncs."""
    snapshot = app.invoices_snapshot()
    unpaid = [inv for inv in snapshot if inv["status"] == "Unpaid"]
    others = [inv for inv in snapshot if inv["status"] != "Unpaid"]
    done: Counter = Counter()
    picked = rng.sample(unpaid, min(len(unpaid), count // 2))
    for inv in picked + rng.sample(others, count - len(picked)):
        new = {"Unpaid": "Paid", "Paid": "Refunded", "Draft": "Unpaid", "Cancelled": "Unpaid",
               "Refunded": "Cancelled"}.get(inv["status"], "Cancelled")
        app.set_status(inv["id"], new)
        done[f"{inv['status']}->{new}"] += 1
    return done


def add_invoices(app: FakeWhmcs, rng: random.Random, count: int) -> None:
    for _ in range(count):
        subtotal = rng.randrange(100, 90000)
        app.add_invoice(subtotal=f"{subtotal // 100}.{subtotal % 100:02d}",
                        tax=f"{subtotal // 500}.00", status=rng.choice(["Unpaid", "Paid"]),
                        currencycode=rng.choice(["EUR", "USD"]),
                        invoicenum="" if rng.random() < 0.5 else f"NEW-{rng.randrange(10**9)}")


def inject(app: FakeWhmcs, fault: dict, after_requests: int) -> None:
    """Fail ``BURST`` consecutive requests, starting after ``after_requests`` good ones."""
    args = {k: v for k, v in fault.items() if k != "kind"}
    for i in range(BURST):
        app.inject_fault(fault["kind"], nth=after_requests + 1 + i, **args)


def failed_run(syncs: Syncs, kind: str, mode: str, after_requests: int) -> tuple[dict, int, int]:
    """Run a sync of blue that meets the fault; check what a failed run must leave.

    Returns the sync record, the invoices stored afterwards, and how many requests the fault hit.
    """
    fault, code, text = FAULTS[kind]
    client, app = syncs.client, syncs.fake.app
    state_before = client.hgetall(keys.sys_sync_state("blue"))
    warning_before = (warnings.get(client, "sync_failed:blue") or {}).get("count", 0)
    requests_before = sum(app.calls.values())
    inject(app, fault, after_requests)
    record = syncs.run("blue", mode, short_timeout=kind == "timeout")
    app.clear_faults()
    hit = sum(app.calls.values()) - requests_before - after_requests
    assert record["state"] == "failed", record
    assert record["error_code"] == code, record
    assert text in record["error"], record["error"]
    assert IDENT not in record["error"] and SECRET not in record["error"]
    warning = warnings.get(client, "sync_failed:blue")
    assert warning is not None and warning["code"] == code and text in warning["message"]
    assert int(warning["count"]) == int(warning_before) + 1 and not warning["acked"]
    # Progress counts stored pages, which trail the fetched ones by at most one batch.
    assert record["pages"] > 0, "the fault was meant to come mid-run, after a stored batch"
    # A failed run moves neither the high-water mark nor the completion times.
    assert client.hgetall(keys.sys_sync_state("blue")) == state_before
    stored = assert_consistent(client, "blue")
    return record, stored, hit


def clean_reference(syncs: Syncs, name: str, step: int) -> dict:
    syncs.register(name, step)
    record = syncs.run(name, "full")
    assert record["state"] == "done", record
    return record


@pytest.mark.parametrize("kind", list(FAULTS))
def test_whmcs_trouble_mid_sync(kind, redis_client, settings, fake):
    # Rows are stored UPSERT_BATCH at a time: let at least one batch land before each fault.
    batch_pages = -(-defaults.UPSERT_BATCH // 30)
    _scenario(kind, redis_client, settings, fake, seeded=1500, step=30,
              fail_a=batch_pages + 3, fail_c=2 * batch_pages + 3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(FAULTS))
def test_whmcs_trouble_mid_sync_long(kind, redis_client, settings, fake):
    _scenario(kind, redis_client, settings, fake, seeded=20000, step=100, fail_a=60,
              fail_c=120)


def _scenario(kind, client, settings, fake, *, seeded, step, fail_a, fail_c):
    """A, B, C, D of the module docstring; faults after ``fail_a`` / ``fail_c`` good requests."""
    app = fake.app
    rng = random.Random(f"sync-faults-{kind}-{seeded}")
    app.seed(seeded, seed=rng.randrange(10**6))
    syncs = Syncs(client, settings, fake)
    syncs.register("blue", step)
    started = time.monotonic()
    notes = []

    # A: a missing sync meets the fault mid-run (descending: the newest are stored)
    record, stored, hit = failed_run(syncs, kind, "missing", after_requests=fail_a)
    assert 0 < stored < seeded, stored
    notes.append(f"A missing failed after {record['pages']} pages, {hit} requests hit, "
                 f"{stored} stored, consistent")
    add_invoices(app, rng, 60)

    # B: WHMCS healthy again: missing completes and equals a clean full sync
    record = syncs.run("blue", "missing")
    assert record["state"] == "done", record
    snapshot = app.invoices_snapshot()
    assert_equals_whmcs(client, "blue", snapshot)
    assert sync.high_water(client, "blue") == snapshot[-1]["id"]
    notes.append(f"B missing done = WHMCS ({len(snapshot)} invoices, "
                 f"{record['inserted']} inserted)")

    changed = change_statuses(app, rng, 80)
    add_invoices(app, rng, 45)
    app.delete_invoice(rng.choice(app.invoices_snapshot())["id"])

    # C: a full sync meets the fault mid-way (ascending: old records partly rewritten)
    record, stored, hit = failed_run(syncs, kind, "full", after_requests=fail_c)
    notes.append(f"C full failed after {record['pages']} pages ({record['updated']} updated), "
                 f"{hit} requests hit, consistent")
    changed += change_statuses(app, rng, 40)
    add_invoices(app, rng, 30)

    # D: faults cleared: a full sync equals a clean full sync into a fresh system
    record = syncs.run("blue", "full")
    assert record["state"] == "done", record
    reference = clean_reference(syncs, "ref_d", step)
    diff = store_diff(client, "blue", "ref_d")
    snapshot = app.invoices_snapshot()
    assert diff == [], diff
    assert_equals_whmcs(client, "blue", snapshot)
    notes.append(f"D full done = clean ({len(snapshot)} invoices, {record['updated']} updated, "
                 f"{record['deleted']} deleted; reference {reference['invoices']})")
    print(f"SYNC FAULTS OK [{kind}] in {time.monotonic() - started:.1f}s: "
          + "; ".join(notes) + f"; statuses changed: {dict(changed)}")
    print(f"  sync times: {', '.join(syncs.times)}")
