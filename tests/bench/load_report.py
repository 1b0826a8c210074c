"""Sustained mixed load against a real coordinator; prints throughput, latency and a verdict.

Not collected by pytest. Starts its own Valkey (AOF, appendfsync always), gunicorn and a fake
WHMCS on loopback, registers systems through the API, then for a fixed time runs:
agents allocating across the systems, an admin reading sequences and ledger pages, and a full
sync of each system, one after another (the first after a third of the time: a baseline),
against the fake WHMCS (seeded with ``--invoices``, served from its own process as a real WHMCS
is another machine) by an RQ worker process (``invoice-sync worker``). Each sync's duration
and invoices/s are printed next to the allocation figures, with the allocation rate while a
sync ran and while none did. At the end the ledger is read back and the history checker gives
its verdict.

    python tests/bench/load_report.py --seconds 30 --agents 12 --systems 3 --workers 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import requests
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs  # noqa: E402
from coordinator.ops.embedded import ValkeyServer  # noqa: E402
from tests.faults.history import History, check, read_all_ledgers  # noqa: E402
from tests.faults.load import allocate_once, percentile  # noqa: E402
from tests.faults.processes import GunicornCoordinator  # noqa: E402

NAMES = ("blue", "red", "orange", "green", "violet", "amber", "teal", "rose")
ROOT = Path(__file__).resolve().parents[2]


def _serve_whmcs(conn, count: int) -> None:
    """Child process: seed and serve a fake WHMCS until told to stop."""
    whmcs = FakeWhmcs("ident", "secret")
    whmcs.seed(count, seed=7)
    with serve_fake_whmcs(whmcs) as fake:
        conn.send(fake.url)
        conn.recv()
        conn.send(dict(whmcs.calls))


def _start_worker(settings: dict, log: Path) -> subprocess.Popen:
    """``invoice-sync worker`` in its own process, on the same settings as gunicorn."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_SYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update({f"INVOICE_SYNC_{k}": str(v) for k, v in settings.items()})
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "coordinator", "worker"], cwd=ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--systems", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--invoices", type=int, default=20000,
                        help="invoices in the fake WHMCS (every system syncs them all)")
    parser.add_argument("--sync-after", type=float, default=None,
                        help="seconds of allocations alone before the first sync starts, "
                        "for a baseline (default: a third of --seconds)")
    parser.add_argument("--sync-timeout", type=float, default=300,
                        help="seconds to wait for each sync to finish")
    args = parser.parse_args(argv)

    admin = "isa_" + secrets.token_urlsafe(32)
    systems = NAMES[: args.systems]
    ours, theirs = multiprocessing.Pipe()
    whmcs = multiprocessing.Process(target=_serve_whmcs, args=(theirs, args.invoices),
                                    daemon=True)
    whmcs.start()
    whmcs_url = ours.recv()
    worker = None
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                ValkeyServer(Path(tmp) / "valkey") as valkey:
            import redis

            from coordinator.numbering import guard

            guard.mark_initialised(redis.Redis.from_url(valkey.url, decode_responses=True),
                                   "load report")  # a fresh store, as serve's first start
            settings = {
                "REDIS_URL": valkey.url, "ADMIN_TOKEN": admin,
                "SECRET_KEYS": Fernet.generate_key().decode(), "ALLOW_HTTP_SYSTEM_URLS": 1,
                "ALLOW_PRIVATE_SYSTEM_URLS": 1, "RATE_LIMIT_AGENT": 0, "RATE_LIMIT_ADMIN": 0,
            }
            worker = _start_worker(settings, Path(tmp) / "worker.log")
            with GunicornCoordinator(Path(tmp), settings, workers=args.workers,
                                     threads=args.threads) as coordinator:
                code = run(args, coordinator.url, admin, systems, whmcs_url)
            if worker.poll() is not None:
                print(f"sync worker exited early ({worker.returncode}):\n"
                      + (Path(tmp) / "worker.log").read_text(errors="replace")[-3000:])
            return code
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        ours.send("stop")
        calls = ours.recv() if ours.poll(10) else {}
        print(f"fake WHMCS answered {calls.get('GetInvoices', 0)} GetInvoices calls")
        whmcs.join(10)


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
    sync_windows: list[tuple[float, float]] = []
    synced: list[tuple[int, float]] = []

    def syncer() -> None:
        """A full sync of each system in turn; each one's wall time from request to done."""
        session = requests.Session()
        wait = args.seconds / 3 if args.sync_after is None else args.sync_after
        if stop.wait(wait):
            return
        for name in systems:
            started = time.monotonic()
            response = session.post(url + f"/v1/systems/{name}/syncs", headers=auth,
                                    json={"mode": "full"}, timeout=10)
            if response.status_code != 202:
                sync_notes.append(f"sync {name}: {response.status_code} {response.text[:300]}")
                return
            sync_id = response.json()["id"]
            record = response.json()
            give_up = started + args.sync_timeout
            while record["state"] in ("queued", "running") and time.monotonic() < give_up:
                time.sleep(0.1)
                record = session.get(url + f"/v1/syncs/{sync_id}", headers=auth,
                                     timeout=10).json()
            took = time.monotonic() - started
            sync_windows.append((started, started + took))
            if record["state"] != "done":
                sync_notes.append(f"sync {name}: {record['state']} after {took:.1f}s "
                                  f"({record.get('error_code')}: {record.get('error')})")
                return
            synced.append((record["invoices"], took))
            sync_notes.append(
                f"sync {name}: done, {record['invoices']} invoices, {record['pages']} pages, "
                f"{record['api_calls']} API calls in {took:.1f}s = "
                f"{record['invoices'] / took:,.0f} invoices/s")

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(args.agents)]
    threads += [threading.Thread(target=reader), threading.Thread(target=syncer)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads[: args.agents]:
        thread.join()
    elapsed = time.monotonic() - started
    threads[-1].join()  # the syncs run to their end, however long the allocations ran
    stop.set()
    threads[-2].join()

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
    if synced:
        invoices = sum(n for n, _ in synced)
        seconds = sum(t for _, t in synced)
        print(f"syncs: {len(synced)} of {len(systems)} done, {invoices} invoices in "
              f"{seconds:.1f}s = {invoices / seconds:,.0f} invoices/s while allocating")
    # Allocation rate while a sync ran, and while none did (within the allocation period).
    end = started + elapsed
    windows = [(max(a, started), min(b, end)) for a, b in sync_windows if a < end]
    busy = sum(b - a for a, b in windows)

    def during(t: float) -> bool:
        return any(a <= t < b for a, b in windows)

    acked_times = [a.finished for a in history.acknowledged]
    in_sync = sum(1 for t in acked_times if during(t))
    if busy > 0 and elapsed - busy > 0:
        print(f"allocations/s while a sync ran: {in_sync / busy:.0f} ({busy:.1f}s); "
              f"while none ran: {(len(acked_times) - in_sync) / (elapsed - busy):.0f} "
              f"({elapsed - busy:.1f}s)")
    print(verdict.line("load report"))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
