"""Numbers per second through ``POST /v1/allocation-batches`` against ``redis-benchmark -t incr``.

Not part of the test suite. One run starts one Valkey (AOF, ``appendfsync always``, checked
and printed) and the coordinator under the production gunicorn settings (as
bench_allocations.py serves it), then alternates, round by round: ``--clients`` threads posting
batches of ``--batch`` new invoices for ``--seconds``, and ``redis-benchmark -t incr``
(``--incr-clients``, default 50 as redis-benchmark's own) on the same server. The figure is
numbers per second over INCRs per second, per round and the median (the aim: >= 1/3).

    python tests/bench/bench_batches.py --batch 1000 --clients 4 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_allocations import _wait_up  # noqa: E402

from coordinator import auth, keys  # noqa: E402
from coordinator.ops.embedded import ValkeyServer, free_port  # noqa: E402


def drive(port: int, token: str, clients: int, batch: int, seconds: float, prefix: str) -> dict:
    """Post batches of new references from ``clients`` threads; return numbers/s and errors."""
    counter = itertools.count()
    numbers, errors = [0] * clients, [0] * clients
    deadline = time.monotonic() + seconds
    url = f"http://127.0.0.1:{port}/v1/allocation-batches"

    def work(slot: int) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            while time.monotonic() < deadline:
                first = next(counter) * batch
                body = {"items": [{"document": "invoice", "reference": f"{prefix}-{first + i}",
                                   "date": "2026-11-21"} for i in range(batch)]}
                response = session.post(url, json=body, timeout=60)
                if response.status_code == 200:
                    numbers[slot] += len(response.json()["items"])
                else:
                    errors[slot] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {"numbers_per_s": sum(numbers) / elapsed, "errors": sum(errors)}


def incr_rate(port: int, clients: int, requests_total: int) -> float:
    """``redis-benchmark -t incr`` on the same server; return its requests per second."""
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "incr", "-c",
         str(clients), "-n", str(requests_total), "-q"],
        capture_output=True, text=True, check=True).stdout
    found = re.findall(r"INCR: ([\d.]+) requests per second", out.replace("\r", "\n"))
    if not found:
        raise RuntimeError(f"unexpected redis-benchmark output: {out!r}")
    return float(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="items per batch (1-1000)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--incr-requests", type=int, default=20000,
                        help="INCRs per redis-benchmark round")
    parser.add_argument("--incr-clients", type=int, default=50,
                        help="redis-benchmark clients (its default, 50: with appendfsync always "
                             "more clients share each fsync, the harder baseline)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("redis-benchmark"):
        sys.exit("redis-benchmark not found (Debian: apt-get install redis-tools)")

    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp) / "valkey") as valkey:
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        fsync = client.config_get("appendfsync")["appendfsync"]
        print(f"valkey {valkey.url}: appendonly {client.config_get('appendonly')['appendonly']}"
              f", appendfsync {fsync}", flush=True)
        if fsync != "always":
            sys.exit("the comparison needs appendfsync always")
        token = auth.new_token(auth.AGENT)
        client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("bench"))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "PROMETHEUS_MULTIPROC_DIR": str(Path(tmp) / "metrics")}
        os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"])
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "bench_allocations.py"),
             "--workers", str(args.workers), "--serve", "coordinator", str(port), valkey.url],
            env=env, stderr=subprocess.DEVNULL)
        ratios = []
        try:
            _wait_up(port)
            drive(port, token, args.clients, args.batch, 2, "warmup")
            valkey_port = int(valkey.url.rsplit(":", 1)[1].split("/")[0])
            for number in range(args.rounds):
                batch = drive(port, token, args.clients, args.batch, args.seconds, f"r{number}")
                incr = incr_rate(valkey_port, args.incr_clients, args.incr_requests)
                ratio = batch["numbers_per_s"] / incr
                ratios.append(ratio)
                print(f"round {number + 1}/{args.rounds}: batch {batch['numbers_per_s']:9.1f} "
                      f"numbers/s ({batch['errors']} errors)  redis-benchmark incr "
                      f"{incr:9.1f}/s  ratio {ratio:.2f}", flush=True)
        finally:
            server.terminate()
            server.wait(20)
            client.close()
        print(f"numbers/s through batches / INCR/s: median {statistics.median(ratios):.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f}; aim >= 0.33)")


if __name__ == "__main__":
    main()
