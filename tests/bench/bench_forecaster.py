"""Forecaster benchmark (not collected by pytest). Run from the project root:

    python tests/bench/bench_forecaster.py [--invoices 100000] [--step 100] [--stored 1000000]

Against a fake WHMCS over loopback HTTP in its own process (as a real WHMCS is another machine:
in-process, its page rendering would hold our GIL) and a private Valkey:

1. full-sync throughput next to a bare loop that only fetches and JSON-decodes the same pages
   with requests (what any client must do at least), and their ratio;
2. peak Python memory of a full sync (tracemalloc, second run into an emptied store);
3. API calls a "missing" sync makes with 0 and with 1,000 new invoices;
4. revenue report time with 10k and with 1M invoices stored (1M written straight to the store),
   and the Redis memory the 1M cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent import WhmcsClient
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs
from coordinator.forecaster import reports, store, sync
from coordinator.ops.embedded import ValkeyServer

IDENT, SECRET = "bench-identifier", "bench-secret-0123456789"


def _serve(conn, count: int) -> None:
    """Child process: seed and serve a fake WHMCS; obey ("add", n) and ("stop",) from ``conn``."""
    fake = FakeWhmcs(IDENT, SECRET)
    t = time.perf_counter()
    fake.seed(count, seed=42)
    seeded = time.perf_counter() - t
    with serve_fake_whmcs(fake) as server:
        conn.send((server.url, seeded))
        while True:
            command = conn.recv()
            if command[0] == "add":
                for _ in range(command[1]):
                    fake.add_invoice(subtotal="12.00", tax="2.28", status="Unpaid",
                                     currencycode="EUR")
                conn.send(len(fake))
            else:
                conn.send(dict(fake.calls))
                return


def bare_fetch(url: str, step: int) -> int:
    """Fetch every page the right way (advance by rows received, stop when empty); count rows."""
    rows, start = 0, 0
    with requests.Session() as session:
        while True:
            data = session.post(url, data={
                "action": "GetInvoices", "identifier": IDENT, "secret": SECRET,
                "responsetype": "json", "limitstart": start, "limitnum": step,
                "orderby": "id", "order": "asc"}).json()
            page = data["invoices"]["invoice"] if data["invoices"] else []
            if not page:
                return rows
            rows += len(page)
            start += len(page)


def clear(client: redis.Redis, system: str) -> None:
    for key in client.scan_iter(match=f"{{sys:{system}}}:*"):
        client.delete(key)


def seed_store(client: redis.Redis, system: str, count: int) -> None:
    """Write ``count`` synthetic records straight through the upsert script (5,000 per call)."""
    rng = random.Random(1)
    statuses = ("Paid",) * 7 + ("Unpaid", "Cancelled", "Refunded")
    batch = {}
    for i in range(1, count + 1):
        day = dt.date(2020, 1, 1) + dt.timedelta(days=i * 2000 // count)
        sub = rng.randrange(500, 60000)
        tax = sub * 19 // 100
        batch[i] = (f"{day:%Y%m%d}|{day + dt.timedelta(days=14):%Y%m%d}||"
                    f"{rng.choice(statuses)}|EUR|{sub}|{tax}|0|0|{sub + tax}|INV-{i:07d}")
        if len(batch) == 5000:
            store.write_records(client, system, batch)
            batch = {}
    store.write_records(client, system, batch)


def time_report(client: redis.Redis, system: str, runs: int = 20) -> float:
    rates = [reports.SystemRate(system, Decimal("1.0837"))]
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        reports.revenue(client, rates, "EUR", "2020-01", "2025-12", "month")
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}Z, {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores, load average "
          f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}, invoices={args.invoices}, "
          f"step={args.step}")
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(tmp, appendfsync="everysec") as vk:
        client = redis.Redis.from_url(vk.url, decode_responses=True)
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.Process(target=_serve, args=(child, args.invoices))
        process.start()
        url, seeded = parent.recv()
        print(f"seeded fake WHMCS (own process): {seeded:.1f}s")
        try:
            bare_fetch(url, args.step)  # warm-up: the fake builds its id view once
            # Interleaved rounds, medians: the box may be shared, so load changes over time.
            bares, fulls = [], []
            for _ in range(args.rounds):
                t = time.perf_counter()
                rows = bare_fetch(url, args.step)
                bares.append(time.perf_counter() - t)
                clear(client, "bench")
                whmcs = WhmcsClient(url, IDENT, SECRET)
                t = time.perf_counter()
                outcome = sync.run(client, "bench", "full", whmcs, args.step)
                fulls.append(time.perf_counter() - t)
            bare, full = statistics.median(bares), statistics.median(fulls)
            n = outcome.invoices
            print(f"bare fetch loop:   {rows} invoices, median {bare:.2f}s = {rows / bare:,.0f}/s"
                  f" (rounds: {', '.join(f'{x:.2f}' for x in bares)})")
            print(f"full sync:         {n} invoices, median {full:.2f}s = {n / full:,.0f}/s "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in fulls)}; {whmcs.calls} API calls)")
            print(f"ratio full sync / bare loop: {bare / full:.1%}")
            assert store.count(client, "bench") == args.invoices

            clear(client, "bench")
            tracemalloc.start()
            sync.run(client, "bench", "full", WhmcsClient(url, IDENT, SECRET), args.step)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"full sync peak Python memory (tracemalloc): {peak / 2**20:.1f} MiB")
            print(f"process max RSS so far: "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

            for new in (0, 1000):
                if new:
                    parent.send(("add", new))
                    parent.recv()
                whmcs = WhmcsClient(url, IDENT, SECRET)
                out = sync.run(client, "bench", "missing", whmcs, args.step)
                print(f"sync with {new:>4} new invoices: {whmcs.calls} API calls, "
                      f"{out.result.inserted} stored")
        finally:
            parent.send(("stop",))
            parent.recv()
            process.join()

        for count in (10_000, args.stored):
            client.execute_command("FLUSHALL", "SYNC")  # synchronous: memory baseline is exact
            before = client.info("memory")["used_memory"]
            t = time.perf_counter()
            seed_store(client, "big", count)
            load = time.perf_counter() - t
            used = client.info("memory")["used_memory"] - before
            took = time_report(client, "big")
            print(f"revenue report with {count:>9,} invoices stored: {took * 1000:.2f} ms "
                  f"(median of 20; store load {load:.1f}s, Redis +{used / 2**20:.0f} MiB, "
                  f"{used / count:.0f} B/invoice)")


if __name__ == "__main__":
    main()
