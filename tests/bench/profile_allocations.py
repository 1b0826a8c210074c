"""Profile one coordinator worker under the allocation bench's load: where its CPU goes.

Not part of the test suite. Starts a Valkey and the coordinator as ``bench_allocations.py``
serves it, but with one gunicorn worker, drives it with the same closed-loop clients, and
samples that worker with py-spy (``pip install py-spy``; not a dependency) counting only the
thread that holds the GIL, i.e. where the worker's Python time goes. Prints, per function, the
share of samples it was on the stack (inclusive), then the top self times.

    python tests/bench/profile_allocations.py --seconds 15 [--agent-limit 0] [--raw out.txt]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_allocations as bench  # noqa: E402

from coordinator import auth, keys  # noqa: E402
from coordinator.numbering import guard  # noqa: E402
from coordinator.ops.embedded import ValkeyServer, free_port  # noqa: E402


def _frame(frame: str) -> str:
    """``name (path/file.py:12)`` -> ``name file.py``."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.split(':')[0].rsplit('/', 1)[-1]}" if where else name


def summarise(raw: Path, top: int) -> None:
    """Print inclusive and self shares from py-spy's ``--format raw`` output."""
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";") if not f.startswith(("thread", "process"))]
        total += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
        if frames:
            own[frames[-1]] += int(count)
    print(f"{total} samples holding the GIL")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}")
        for name, count in counter.most_common(top):
            print(f"{100 * count / max(1, total):5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--agent-limit", type=int, default=10**9,
                        help="RATE_LIMIT_AGENT (0: agent tokens from the token cache)")
    parser.add_argument("--raw", type=Path, default=None, help="keep py-spy's raw output here")
    parser.add_argument("--top", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp) / "valkey") as valkey:
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        guard.mark_initialised(client, "benchmark")
        token = auth.new_token(auth.AGENT)
        client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("bench"))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(bench.ROOT),
               "PROMETHEUS_MULTIPROC_DIR": str(Path(tmp) / "metrics")}
        server = subprocess.Popen(
            [sys.executable, bench.__file__, "--workers", "1", "--threads", "0",
             "--agent-limit", str(args.agent_limit), "--serve", "coordinator", str(port),
             valkey.url], env=env, stderr=subprocess.DEVNULL)
        raw = args.raw or Path(tmp) / "py-spy.txt"
        try:
            bench._wait_up(port)
            bench._drive_in_child(port, token, args.clients, 2, "warm")
            (worker,) = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                       text=True, check=True).stdout.split()
            spy = subprocess.Popen(
                ["py-spy", "record", "--gil", "-r", "200", "-d", str(int(args.seconds)),
                 "-f", "raw", "-o", str(raw), "-p", worker],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            load = bench._drive_in_child(port, token, args.clients, args.seconds, "profile")
            spy.wait(args.seconds + 60)
        finally:
            server.terminate()
            server.wait(20)
        print(json.dumps(load))
        summarise(raw, args.top)
        client.close()


if __name__ == "__main__":
    main()
