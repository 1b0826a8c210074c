"""Compare the allocation hot path of this tree with another checkout, in-process, interleaved.

Not part of the test suite. The gunicorn benchmark (``bench_allocations.py``) swings by more
than a small change on a shared machine, so this one takes the HTTP server out: each round
runs ``--count`` allocations through the WSGI app (``create_app().test_client()``, the real
views, auth, durability wait, rate limit and logging) on one Valkey, once with this tree's
code and once with the other's, alternating which goes first, each in a fresh child process
on its own database. It reports the CPU time of the child per allocation (the steadiest
figure on a CPU-bound machine) and the wall time, as medians over the rounds, and their ratio.

    git worktree add --detach /tmp/before 6d52368
    python tests/bench/bench_allocation_trees.py --other /tmp/before --rounds 6 --count 1000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _child(url: str, count: int) -> None:
    """Run in a child whose PYTHONPATH is the tree under test: allocate ``count`` numbers."""
    import redis

    from coordinator import auth, keys
    from coordinator.app import create_app

    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    try:
        from coordinator.numbering import guard
    except ImportError:  # a tree from before the numbering guard: nothing to initialise
        guard = None
    if guard is not None:
        guard.mark_initialised(client, "benchmark")
    token = auth.new_token(auth.AGENT)
    client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("blue"))
    app = create_app({"REDIS_URL": url, "RATE_LIMIT_AGENT": 10**9, "LOG_LEVEL": "WARNING"})
    http = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(50):  # warm-up: scripts loaded, settings written, hints learnt
        http.post("/v1/allocations", headers=headers,
                  json={"document": "invoice", "reference": f"w{i}", "date": "2026-11-21"})
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        response = http.post("/v1/allocations", headers=headers, json={
            "document": "credit_note" if i % 10 == 0 else "invoice", "reference": str(i),
            "date": "2026-11-21"})
        assert response.status_code == 201, response.get_data(as_text=True)
        response.close()  # as a WSGI server does once the body is sent: after-response work
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({"cpu_ms": cpu * 1000 / count, "wall_ms": wall * 1000 / count}))


def _run(tree: Path, url: str, count: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, str(count)], cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, help="the other checkout (required)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    if args.other is None:
        parser.error("--other is required")
    sys.path.insert(0, str(ROOT))
    from coordinator.ops.embedded import ValkeyServer

    trees = {"this": ROOT, "other": args.other.resolve()}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp)) as server:
        base = server.url.rsplit("/", 1)[0]
        for round_no in range(args.rounds):
            order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
            for db, name in enumerate(order, start=1):
                results[name].append(_run(trees[name], f"{base}/{db}", args.count))
            print(f"round {round_no + 1}: " + "  ".join(
                f"{name} cpu {results[name][-1]['cpu_ms']:.3f} ms wall "
                f"{results[name][-1]['wall_ms']:.3f} ms" for name in trees), flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rows) for k in ("cpu_ms", "wall_ms")}
               for name, rows in results.items()}
    ratios = [t["cpu_ms"] / o["cpu_ms"] for t, o in zip(results["this"], results["other"],
                                                        strict=True)]
    for name, median in medians.items():
        print(f"median {name:<5}  cpu/allocation {median['cpu_ms']:.3f} ms  "
              f"wall/allocation {median['wall_ms']:.3f} ms")
    print(f"cpu ratio this/other per round: median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
