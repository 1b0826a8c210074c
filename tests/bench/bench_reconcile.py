"""Reconciliation benchmark (not collected by pytest). Run from the project root:

    python tests/bench/bench_reconcile.py [--numbers 100000] [--issued 10000] [--rounds 20]

On a private Valkey: one system with ``--numbers`` invoice numbers stored (every tenth one a
duplicate, every other one never issued) and ``--issued`` numbers issued and confirmed, half of
them shown by the WHMCS. Then, in the same run:

1. **before**: ``GET /v1/reports/reconciliation`` as the previous release answered it (the
   view computing the full report over every stored number and ledger entry);
2. **after**: the same GET reading the kept findings;

each the median of ``--rounds`` requests through the same Flask app (the same schema dumps
the same report: the kept findings are checked equal first), their ratio, and the Redis
commands of one GET (``INFO commandstats``). Also: the time to build the state once (what the
scheduler does on an upgraded store) and to apply a sync that changed 1,000 numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent import WhmcsInvoice
from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.forecaster import reconcile, reconcile_state, store
from coordinator.numbering import allocation
from coordinator.numbering.allocation import Hints, Item
from coordinator.ops.embedded import ValkeyServer
from coordinator.systems import registry, secrets
from coordinator.systems.urls import UrlPolicy


def _record(invoice_id: int, number: str) -> str:
    day = dt.date(2026, 3, 1)
    return store.encode(WhmcsInvoice(
        id=invoice_id, invoicenum=number, date=day, duedate=day, datepaid=None,
        status="Paid", subtotal=Decimal(1), credit=Decimal(0), tax=Decimal(0),
        tax2=Decimal(0), total=Decimal(1), currencycode="EUR", updated_at=None))


def _fill(client: redis.Redis, numbers: int, issued: int) -> None:
    from coordinator.numbering import guard

    guard.mark_initialised(client, "benchmark")
    config = {"SECRET_KEYS": secrets.Fernet.generate_key().decode(),
              "ALLOW_HTTP_SYSTEM_URLS": True, "ALLOW_PRIVATE_SYSTEM_URLS": True}
    registry.create_system(client, secrets.fernet_from_config(config), {
        "name": "blue", "url": "http://127.0.0.1:9/includes/api.php",
        "api_identifier": "i" * 16, "api_secret": "s" * 20, "step": 100},
        UrlPolicy.from_config(config))
    hints, formatted = Hints(), []
    for start in range(0, issued, 1000):
        made = allocation.allocate_batch(client, "blue", [
            Item("invoice", f"r{i}", dt.date(2026, 3, 1))
            for i in range(start, min(issued, start + 1000))], hints=hints)
        for entry, _ in made:
            allocation.transition(client, entry["id"], "confirm", entry["formatted"],
                                  actor_kind="admin", actor_system=None, actor="bench")
            formatted.append(entry["formatted"])
    shown = formatted[: issued // 2]
    records = {}
    for i in range(1, numbers + 1):
        if i <= len(shown):
            number = shown[i - 1]
        else:
            number = f"HAND-{i // 2 if i % 10 == 0 else i}"
        records[i] = _record(i, number)
    store.write_records(client, "blue", records)
    client.hset(keys.sys_sync_state("blue"), "last_full_at", "2026-03-02T00:00:00Z")


def _median_ms(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _commands(client: redis.Redis, call) -> int:
    client.config_resetstat()
    call()
    return sum(int(v["calls"]) for k, v in client.info("commandstats").items()
               if k not in ("cmdstat_config|resetstat",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--issued", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as data, ValkeyServer(Path(data)) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        t = time.perf_counter()
        _fill(client, options.numbers, options.issued)
        print(f"filled {options.numbers:,} numbers, {options.issued:,} issued "
              f"in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        reconcile_state.rebuild(client)
        print(f"state built once (upgrade, scheduler): {time.perf_counter() - t:.2f} s")
        token = auth.new_token(auth.ADMIN)
        auth.register_admin_token(client, token)
        http = create_app({"TESTING": True, "REDIS_URL": server.url}).test_client()
        headers = {"Authorization": f"Bearer {token}"}

        def after():
            response = http.get("/v1/reports/reconciliation", headers=headers)
            assert response.status_code == 200, response.get_json()

        from coordinator.forecaster import api

        class Previous:  # the previous release's GET: the full computation, in the web worker
            @staticmethod
            def read(redis_client):
                return reconcile.full_report(redis_client)

        def before():
            api.reconcile_state = Previous
            try:
                after()
            finally:
                api.reconcile_state = reconcile_state

        kept, full = reconcile_state.read(client), reconcile.full_report(client)
        assert reconcile_state.compare(kept, full) == [], "kept findings differ"
        after(), before()  # warm-up
        slow = _median_ms(before, max(3, options.rounds // 4))
        fast = _median_ms(after, options.rounds)
        print(f"GET before (full computation): {slow:9.1f} ms, "
              f"{_commands(client, before):,} Redis commands")
        print(f"GET after  (kept findings):    {fast:9.1f} ms, "
              f"{_commands(client, after):,} Redis commands")
        print(f"after / before: {fast / slow:.4f} (before is {slow / fast:,.0f}x slower)")
        changed = {i: _record(i, f"NEW-{i}") for i in range(1, 1001)}
        store.write_records(client, "blue", changed)
        t = time.perf_counter()
        reconcile_state.refresh(client)
        print(f"update after a sync that changed 1,000 invoices' numbers: "
              f"{(time.perf_counter() - t) * 1000:.0f} ms")
        assert reconcile_state.compare(reconcile_state.read(client),
                                       reconcile.full_report(client)) == []


if __name__ == "__main__":
    main()
