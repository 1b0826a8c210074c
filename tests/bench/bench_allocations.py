"""Compare the coordinator's allocation endpoint with a bare Flask endpoint doing only INCRBY.

Not part of the test suite (pytest collects ``test_*.py`` only). One run starts a Valkey
(AOF, appendfsync always) and, with the production gunicorn settings
(``coordinator/ops/gunicorn_defaults.py``, same workers and threads for both), (a) a bare Flask
app whose endpoint runs one INCRBY and (b) the coordinator as ``invoice-sync serve`` runs it
(multiprocess metrics, JSON request logs, security headers, rate limiting on, with a limit
high enough never to answer 429). Both servers stay up for the whole run; rounds alternate
bare/coordinator (order flipped every round) so drift on a noisy machine hits both alike.

The load generator is its own process and deliberately cheap: ``--clients`` threads, each on
one keep-alive socket, sending pre-encoded HTTP/1.1 requests and reading the replies by
``Content-Length``. (``requests`` spent about as much CPU per call as the bare server does,
on the same two cores, which squeezed the faster server hardest and flattened the ratio.)

    python tests/bench/bench_allocations.py --clients 16 --seconds 10 --rounds 5

With ``--other TREE`` (a checkout of another commit, e.g. ``git archive C | tar -x -C TREE``)
a third server runs that tree's coordinator in the same rounds, so a change is measured
against its predecessor and the bare endpoint in one run. ``--other-python`` runs that tree
with another interpreter (e.g. a virtualenv without ``hiredis``), so a dependency is measured
in the same run too.

Prints every round, then the median of the per-round ratios (the aim, issue 13: throughput
>= 0.75, p99 <= 1.5 of the bare endpoint). Each line also gives the CPU time per request of
the server (gunicorn master and workers) and of Valkey, read from /proc: on a shared,
CPU-bound machine that is the steadiest figure, and the throughput ratio follows it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
TREE = Path(os.environ.get("INVOICE_SYNC_BENCH_TREE") or ROOT)
"""The tree whose coordinator this process imports (``--other`` serves another one)."""
sys.path.insert(0, str(TREE))

from coordinator import auth, keys  # noqa: E402
from coordinator.ops.embedded import ValkeyServer, free_port  # noqa: E402

KINDS = ("bare", "coordinator")
OTHER = "other"


def _bare_app(redis_url: str):
    from flask import Flask, jsonify

    app = Flask("bare")
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    @app.post("/v1/allocations")
    def incr():
        return jsonify({"number": client.incrby("bare:counter", 1)}), 201

    return app


def serve(kind: str, port: int, redis_url: str, workers: int, threads: int | None,
          agent_limit: int = 10**9) -> None:
    """Run one server in this process (called in a child process)."""
    from gunicorn.app.base import BaseApplication

    from coordinator.ops import gunicorn_defaults

    class App(BaseApplication):
        def load_config(self):
            settings = {k: v for k, v in vars(gunicorn_defaults).items()
                        if not k.startswith("_")}
            settings.update(bind=f"127.0.0.1:{port}", workers=workers)
            if threads:
                settings["threads"] = threads
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            if kind == "bare":
                return _bare_app(redis_url)
            from coordinator.app import create_app

            # Limiting stays on (its counter is part of the cost), but never trips; with
            # --agent-limit 0 agents are not limited, and their tokens come from the cache.
            return create_app({"REDIS_URL": redis_url, "RATE_LIMIT_AGENT": agent_limit})

    App().run()


def _wait_up(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not come up")


def _request(port: int, token: str, reference: str) -> bytes:
    body = json.dumps({"document": "invoice", "reference": reference,
                       "date": "2026-11-21"}).encode()
    head = (f"POST /v1/allocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _read_response(sock: socket.socket, buffer: bytearray) -> int:
    """Read one response off a keep-alive socket; return its status code."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end]).lower()
    status = int(head[9:12])
    start = head.index(b"content-length:") + 15
    length = int(head[start:head.index(b"\r\n", start)])
    while len(buffer) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    del buffer[:end + length]
    return status


def drive(port: int, token: str, clients: int, seconds: float, prefix: str) -> dict:
    """Closed-loop load: ``clients`` threads post allocations for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    counter = itertools.count()
    stop = threading.Event()

    def run(slot: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        while not stop.is_set():
            payload = _request(port, token, f"{prefix}-{next(counter)}")
            start = time.perf_counter()
            sock.sendall(payload)
            status = _read_response(sock, buffer)
            elapsed = time.perf_counter() - start
            if status == 201:
                latencies[slot].append(elapsed)
            else:
                errors[slot] += 1
        sock.close()

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


def _cpu_seconds(root: int) -> float:
    """CPU time (user + system) of process ``root`` and its descendants, from /proc (Linux)."""
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(cpu.get(pid, 0.0) for pid in tree)


def _drive_in_child(port: int, token: str, clients: int, seconds: float, prefix: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--drive", str(port), token, str(clients), str(seconds),
         prefix], check=True, capture_output=True, text=True, timeout=seconds + 60)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of each server")
    parser.add_argument("--threads", type=int, default=0,
                        help="gunicorn threads per worker of each server (0: the shared default)")
    parser.add_argument("--other", type=Path, default=None,
                        help="another checkout whose coordinator runs as a third server")
    parser.add_argument("--agent-limit", type=int, default=10**9,
                        help="RATE_LIMIT_AGENT of the coordinators (default: on, never trips; "
                             "0: agents unlimited, their tokens served from the token cache)")
    parser.add_argument("--other-python", default=sys.executable,
                        help="the interpreter that serves --other (default: this one)")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "REDIS_URL"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--drive", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2], args.workers, args.threads,
              args.agent_limit)
        return
    if args.drive:
        port, token, clients, seconds, prefix = args.drive
        print(json.dumps(drive(int(port), token, int(clients), float(seconds), prefix)))
        return

    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp) / "valkey") as valkey:
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        from coordinator.numbering import guard

        guard.mark_initialised(client, "benchmark")  # a fresh store, as serve's first start
        token = auth.new_token(auth.AGENT)
        client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("bench"))
        valkey_pid = int(client.info("server")["process_id"])
        kinds = KINDS + ((OTHER,) if args.other else ())
        ports = {kind: free_port() for kind in kinds}
        children = []
        try:
            for kind in kinds:
                tree = args.other.resolve() if kind == OTHER else ROOT
                env = {**os.environ, "PYTHONPATH": str(tree), "INVOICE_SYNC_BENCH_TREE": str(tree)}
                if kind != "bare":
                    # As `invoice-sync serve` runs it: workers share metrics through files.
                    env["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / f"metrics-{kind}")
                python = args.other_python if kind == OTHER else sys.executable
                children.append(subprocess.Popen(
                    [python, __file__, "--workers", str(args.workers),
                     "--threads", str(args.threads), "--agent-limit", str(args.agent_limit),
                     "--serve", kind if kind == "bare" else "coordinator", str(ports[kind]),
                     valkey.url],
                    env=env, stderr=subprocess.DEVNULL))
            for kind in kinds:
                _wait_up(ports[kind])
            rounds = []
            for number in range(args.rounds):
                order = kinds if number % 2 == 0 else kinds[::-1]
                result = {}
                for kind in order:
                    prefix = f"{kind}-{number}"
                    _drive_in_child(ports[kind], token, args.clients, args.warmup, "w" + prefix)
                    pids = (children[kinds.index(kind)].pid, valkey_pid)
                    before = [_cpu_seconds(pid) for pid in pids]
                    result[kind] = r = _drive_in_child(
                        ports[kind], token, args.clients, args.seconds, prefix)
                    after = [_cpu_seconds(pid) for pid in pids]
                    done = max(1, r["requests"] + r["errors"])
                    r["server_cpu_ms"] = 1000 * (after[0] - before[0]) / done
                    r["valkey_cpu_ms"] = 1000 * (after[1] - before[1]) / done
                bare, coord = result["bare"], result["coordinator"]
                result["rps_ratio"] = coord["rps"] / bare["rps"]
                result["p99_ratio"] = coord["p99_ms"] / bare["p99_ms"]
                if args.other:
                    result["other_rps_ratio"] = result[OTHER]["rps"] / bare["rps"]
                rounds.append(result)
                print(f"round {number + 1}/{args.rounds}", flush=True)
                for kind in kinds:
                    r = result[kind]
                    print(f"  {kind:12s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                          f"p99 {r['p99_ms']:6.2f} ms  ({r['requests']} ok, "
                          f"{r['errors']} errors)  CPU/request: server "
                          f"{r['server_cpu_ms']:.2f} ms, valkey {r['valkey_cpu_ms']:.2f} ms",
                          flush=True)
                print(f"  ratio throughput {result['rps_ratio']:.2f}  "
                      f"p99 {result['p99_ratio']:.2f}"
                      + (f"  (other tree: throughput {result['other_rps_ratio']:.2f})"
                         if args.other else ""), flush=True)
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(20)
        print("median over rounds")
        for kind in kinds:
            print(f"  {kind:12s} "
                  f"{statistics.median(r[kind]['rps'] for r in rounds):8.1f} req/s  "
                  f"p50 {statistics.median(r[kind]['p50_ms'] for r in rounds):6.2f} ms  "
                  f"p99 {statistics.median(r[kind]['p99_ms'] for r in rounds):6.2f} ms  "
                  "CPU/request: server "
                  f"{statistics.median(r[kind]['server_cpu_ms'] for r in rounds):.2f} ms, "
                  f"valkey {statistics.median(r[kind]['valkey_cpu_ms'] for r in rounds):.2f} ms")
        rps_ratios = sorted(r["rps_ratio"] for r in rounds)
        p99_ratios = sorted(r["p99_ratio"] for r in rounds)
        print(f"throughput ratio coordinator/bare: median {statistics.median(rps_ratios):.2f} "
              f"(range {rps_ratios[0]:.2f}-{rps_ratios[-1]:.2f}; aim >= 0.75)")
        if args.other:
            others = sorted(r["other_rps_ratio"] for r in rounds)
            print(f"throughput ratio other tree/bare: median {statistics.median(others):.2f} "
                  f"(range {others[0]:.2f}-{others[-1]:.2f})")
        print(f"p99 ratio coordinator/bare: median {statistics.median(p99_ratios):.2f} "
              f"(range {p99_ratios[0]:.2f}-{p99_ratios[-1]:.2f}; aim <= 1.5)")
        client.close()


if __name__ == "__main__":
    main()
