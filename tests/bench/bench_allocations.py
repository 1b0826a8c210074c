"""Compare the coordinator's allocation endpoint with a bare Flask endpoint doing only INCRBY.

Not part of the test suite (pytest collects ``test_*.py`` only). One run starts a Valkey
(AOF, appendfsync always), then, with the production gunicorn settings
(``coordinator/gunicorn_defaults.py``), (a) a bare Flask app whose endpoint runs one INCRBY,
(b) the coordinator; drives each with the same closed-loop load (N threads, each with its
own keep-alive ``requests.Session``, loopback only) and prints throughput and latency.

    /work/venv/bin/python tests/bench/bench_allocations.py --clients 16 --seconds 10
"""

from __future__ import annotations

import argparse
import itertools
import os
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

from coordinator import auth, keys  # noqa: E402
from coordinator.embedded import ValkeyServer, free_port  # noqa: E402


def _bare_app(redis_url: str):
    from flask import Flask, jsonify

    app = Flask("bare")
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    @app.post("/v1/allocations")
    def incr():
        return jsonify({"number": client.incrby("bare:counter", 1)}), 201

    return app


def serve(kind: str, port: int, redis_url: str, workers: int) -> None:
    """Run one server in this process (called in a child process)."""
    from gunicorn.app.base import BaseApplication

    from coordinator import gunicorn_defaults

    class App(BaseApplication):
        def load_config(self):
            settings = {k: v for k, v in vars(gunicorn_defaults).items()
                        if not k.startswith("_")}
            settings.update(bind=f"127.0.0.1:{port}", workers=workers)
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            if kind == "bare":
                return _bare_app(redis_url)
            from coordinator.app import create_app

            return create_app({"REDIS_URL": redis_url})

    App().run()


def _wait_up(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def drive(url: str, headers: dict, clients: int, seconds: float, prefix: str) -> dict:
    """Closed-loop load: ``clients`` threads post allocations for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    counter = itertools.count()
    stop = threading.Event()

    def run(slot: int) -> None:
        session = requests.Session()
        session.headers.update(headers)
        while not stop.is_set():
            body = {"document": "invoice", "reference": f"{prefix}-{next(counter)}",
                    "date": "2026-11-21"}
            start = time.perf_counter()
            response = session.post(url, json=body, timeout=10)
            elapsed = time.perf_counter() - start
            if response.status_code == 201:
                latencies[slot].append(elapsed)
            else:
                errors[slot] += 1
        session.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    flat = sorted(x for each in latencies for x in each)
    return {
        "requests": len(flat), "errors": sum(errors), "rps": len(flat) / wall,
        "p50_ms": 1000 * statistics.median(flat),
        "p99_ms": 1000 * flat[min(len(flat) - 1, int(len(flat) * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of each server")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "REDIS_URL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2], args.workers)
        return

    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp) / "valkey") as valkey:
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        token = auth.new_token(auth.AGENT)
        client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("bench"))
        headers = {"Authorization": f"Bearer {token}"}
        results = {}
        for kind in ("bare", "coordinator"):
            port = free_port()
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            child = subprocess.Popen(
                [sys.executable, __file__, "--workers", str(args.workers),
                 "--serve", kind, str(port), valkey.url],
                env=env, stderr=subprocess.DEVNULL)
            try:
                base = f"http://127.0.0.1:{port}"
                _wait_up(base + "/")
                url = base + "/v1/allocations"
                drive(url, headers, args.clients, 1.0, f"warm-{kind}")  # warm-up
                results[kind] = drive(url, headers, args.clients, args.seconds, kind)
            finally:
                child.terminate()
                child.wait(20)
        for kind, r in results.items():
            print(f"{kind:12s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                  f"p99 {r['p99_ms']:6.2f} ms  ({r['requests']} ok, {r['errors']} errors)")
        bare, coord = results["bare"], results["coordinator"]
        print(f"throughput ratio coordinator/bare: {coord['rps'] / bare['rps']:.2f} "
              f"(aim >= 0.90); p99 ratio: {coord['p99_ms'] / bare['p99_ms']:.2f} (aim <= 1.5)")
        client.close()


if __name__ == "__main__":
    main()
