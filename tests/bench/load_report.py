"""Sustained mixed load against a real coordinator; prints throughput, latency and a verdict.

Not collected by pytest. Starts its own Valkey (AOF, appendfsync always), gunicorn and a fake
WHMCS on loopback, registers systems through the API, then for a fixed time runs:
agents allocating across the systems, an admin reading sequences and ledger pages, and (where
the build has the forecaster) a full sync of each system against the fake WHMCS. At the end the
ledger is read back and the history checker gives its verdict.

    python tests/bench/load_report.py --seconds 30 --agents 12 --systems 3 --workers 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import requests
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from coordinator.embedded import ValkeyServer  # noqa: E402
from coordinator.fake_whmcs import FakeWhmcs, serve_fake_whmcs  # noqa: E402
from tests.faults.history import History, check, read_all_ledgers  # noqa: E402
from tests.faults.load import allocate_once, percentile  # noqa: E402
from tests.faults.processes import GunicornCoordinator  # noqa: E402

NAMES = ("blue", "red", "orange", "green", "violet", "amber", "teal", "rose")


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--systems", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--invoices", type=int, default=2000, help="per fake WHMCS")
    args = parser.parse_args(argv)

    admin = "isa_" + secrets.token_urlsafe(32)
    systems = NAMES[: args.systems]
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp) / "valkey") as valkey:
        whmcs = FakeWhmcs("ident", "secret")
        whmcs.seed(args.invoices, seed=7)
        with serve_fake_whmcs(whmcs) as fake, GunicornCoordinator(Path(tmp), {
            "REDIS_URL": valkey.url, "ADMIN_TOKEN": admin,
            "SECRET_KEYS": Fernet.generate_key().decode(), "ALLOW_HTTP_SYSTEM_URLS": 1,
            "ALLOW_PRIVATE_SYSTEM_URLS": 1, "RATE_LIMIT_AGENT": 0, "RATE_LIMIT_ADMIN": 0,
        }, workers=args.workers, threads=args.threads) as coordinator:
            return run(args, coordinator.url, admin, systems, fake.url)


def run(args, url: str, admin: str, systems: tuple[str, ...], whmcs_url: str) -> int:
    auth = {"Authorization": f"Bearer {admin}"}
    tokens = {}
    for name in systems:
        response = requests.post(url + "/v1/systems", headers=auth, timeout=10, json={
            "name": name, "url": whmcs_url, "api_identifier": "ident", "api_secret": "secret",
            "step": 100})
        response.raise_for_status()
        tokens[name] = response.json()["agent_token"]

    history = History()
    reads: dict[str, list[float]] = defaultdict(list)
    read_status: Counter = Counter()
    stop = threading.Event()
    deadline = time.monotonic() + args.seconds

    def agent(index: int) -> None:
        system = systems[index % len(systems)]
        session = requests.Session()
        i = 0
        while time.monotonic() < deadline:
            document = "credit_note" if i % 10 == 9 else "invoice"
            attempt = allocate_once(url, tokens[system], history, system, document,
                                    f"{index}-{i}", "2026-11-21", session=session)
            if attempt.acknowledged or attempt.status not in (429, 503, None):
                i += 1

    def reader() -> None:
        session = requests.Session()
        paths = ["/v1/sequences", "/v1/sequences/invoice/ledger?period=2026&limit=100",
                 "/v1/sequences/invoice/gaps?period=2026", "/v1/systems"]
        n = 0
        while not stop.is_set():
            path = paths[n % len(paths)]
            started = time.monotonic()
            response = session.get(url + path, headers=auth, timeout=10)
            reads[path.split("?")[0]].append(time.monotonic() - started)
            read_status[response.status_code] += 1
            n += 1
            stop.wait(0.05)

    sync_notes: list[str] = []

    def syncer() -> None:
        for name in systems:
            response = requests.post(url + f"/v1/systems/{name}/syncs", headers=auth,
                                     json={"mode": "full"}, timeout=10)
            if response.status_code in (404, 405):
                sync_notes.append("sync: not available in this build (forecaster not merged)")
                return
            sync_notes.append(f"sync {name}: {response.status_code} {response.json()}")

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(args.agents)]
    threads += [threading.Thread(target=reader), threading.Thread(target=syncer)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads[: args.agents]:
        thread.join()
    stop.set()
    for thread in threads[args.agents:]:
        thread.join()
    elapsed = time.monotonic() - started

    def fetch(path):
        response = requests.get(url + path, headers=auth, timeout=30)
        return response.status_code, response.json()

    verdict = check(history, read_all_ledgers(fetch, history))
    lat = history.latencies()
    acks = len(history.acknowledged)
    print(f"load report {dt.date.today().isoformat()} · {os.cpu_count()} CPUs · "
          f"{args.seconds:.0f}s · {args.agents} agents · {len(systems)} systems · "
          f"gunicorn {args.workers}x{args.threads} gthread · Valkey appendfsync always")
    print(f"allocations: {acks} acknowledged, {acks / elapsed:.0f}/s; latency ms "
          f"p50 {_ms(lat, .5)} p99 {_ms(lat, .99)} p999 {_ms(lat, .999)} max {_ms(lat, 1)}")
    print(f"allocation statuses: {dict(sorted(history.status_counts().items(), key=str))}")
    for path, values in sorted(reads.items()):
        print(f"admin GET {path}: {len(values)} reads; ms p50 {_ms(values, .5)} "
              f"p99 {_ms(values, .99)}")
    print(f"admin statuses: {dict(read_status)}")
    for note in sync_notes:
        print(note)
    print(verdict.line("load report"))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
