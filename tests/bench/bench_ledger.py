"""What the ledger costs as it grows: Redis memory per number, and the gap report's work.

Not part of the test suite (pytest collects ``test_*.py`` only), and no pass/fail: it prints
figures. For each size it starts a fresh Valkey, takes N invoice numbers through the domain
code (``numbering.allocation``, the script the HTTP path runs), confirms all but every
``--void-every``-th (those are voided with a reason, as an agent does), seals the chain, then:

- memory: ``INFO memory`` ``used_memory`` before/after, divided by N (what the allocator really
  holds, fragmentation aside), and ``MEMORY USAGE key SAMPLES 0`` per key (the breakdown);
  then again after compacting the ledger (``numbering.compaction.run``, numbers settled at once:
  ``LEDGER_SETTLE_AFTER_SECONDS`` 0), which is verified (``chain.verify``) before the report;
- the gap report of the period (``numbering.ledger.gaps``): Redis commands it sends (``INFO
  commandstats`` calls before/after, minus the INFO itself), and wall time (median of
  ``--repeat`` runs; indicative only on a shared machine), for the first report after the
  numbers were taken (it brings the gap indexes up to date) and for later ones.

The server runs with ``appendfsync no`` to fill it faster; memory and commands do not depend
on the fsync policy.

    python tests/bench/bench_ledger.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from coordinator.numbering import allocation, chain, compaction, ledger  # noqa: E402
from coordinator.numbering.allocation import Hints  # noqa: E402
from coordinator.ops.embedded import ValkeyServer  # noqa: E402

DAY = dt.date(2026, 11, 21)
PERIOD = "2026"
GRACE = 3600


def commands(client: redis.Redis) -> int:
    """Commands the server has run so far (every INFO is one more)."""
    return sum(int(stats["calls"]) for stats in client.info("commandstats").values())


def fill(client: redis.Redis, size: int, void_every: int) -> None:
    from coordinator.numbering import guard

    guard.mark_initialised(client, "benchmark")  # a fresh store, as serve's first start
    hints = Hints()
    for i in range(size):
        entry, _ = allocation.allocate(client, "blue", "invoice", str(100000 + i), DAY,
                                       None, hints)
        if void_every and i % void_every == void_every - 1:
            allocation.transition(client, entry["id"], "void", "deleted before sending",
                                  actor_kind="agent", actor_system="blue", actor="agent:blue")
        else:
            allocation.transition(client, entry["id"], "confirm", entry["formatted"],
                                  actor_kind="agent", actor_system="blue", actor="agent:blue")
        if i % 5000 == 4999:
            chain.seal(client, "invoice")
    chain.seal(client, "invoice")


def by_role(client: redis.Redis) -> Counter:
    """MEMORY USAGE of every key, grouped by what the key holds (its name after the tag)."""
    found: Counter = Counter()
    for key in client.scan_iter(count=1000):
        role = key.split(":", 2)[-1] if key.startswith("{ser:") else key
        role = role.removeprefix("invoice:").split(":")[0]
        found[role] += client.memory_usage(key, samples=0) or 0
    return found


def gap_report(client: redis.Redis, repeat: int) -> tuple[int, int, int, float, float]:
    """Gaps found; Redis commands of the first report and of a later one; seconds of the
    first and median seconds of ``repeat`` later ones.

    The first report after the numbers were taken also brings the gap indexes up to date (the
    pending-number scan, and on upgraded data the one-time void backfill); later ones read the
    indexes only.
    """
    before = commands(client)
    started = time.perf_counter()
    found = ledger.gaps(client, "invoice", PERIOD, GRACE)
    first_seconds = time.perf_counter() - started
    first = commands(client) - before - 1  # the second INFO counts itself
    before = commands(client)
    ledger.gaps(client, "invoice", PERIOD, GRACE)
    later = commands(client) - before - 1
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        ledger.gaps(client, "invoice", PERIOD, GRACE)
        times.append(time.perf_counter() - started)
    return len(found), first, later, first_seconds, statistics.median(times)


def run(size: int, void_every: int, repeat: int) -> None:
    with ValkeyServer(Path(tempfile.mkdtemp(prefix="bench-ledger-")),
                      appendfsync="no") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        # Warm: scripts loaded, sequences initialised, so the baseline holds only fixed costs.
        fill(client, 1, 0)
        client.flushall()
        fill(client, 0, 0)
        base = client.info("memory")["used_memory"]
        started = time.perf_counter()
        fill(client, size, void_every)
        filled = time.perf_counter() - started
        used = client.info("memory")["used_memory"] - base
        roles = by_role(client)
        started = time.perf_counter()
        archived = compaction.run(client, "invoice", {"LEDGER_SETTLE_AFTER_SECONDS": 0})
        compacted = time.perf_counter() - started
        after = client.info("memory")["used_memory"] - base
        compact_roles = by_role(client)
        verified = chain.verify(client, "invoice")
        gaps, first, sent, first_seconds, seconds = gap_report(client, repeat)
        events = client.llen("{ser:default}:invoice:events")
        voided = size // void_every if void_every else 0
        print(f"\n{size} numbers ({events} chained events, {voided} voided), "
              f"filled in {filled:.0f} s")
        print(f"  used_memory delta: {used / size:.0f} bytes per number")
        print(f"  MEMORY USAGE sum: {sum(roles.values()) / size:.0f} bytes per number, by key:")
        for role, total in roles.most_common():
            if total / size >= 0.5:
                print(f"    {role:<16} {total / size:7.1f}")
        print(f"  compacted ({archived['events']} events archived, {archived['entries']} "
              f"entries settled in {compacted:.1f} s, verify ok: "
              f"{verified['ok']}, {verified['events']} events):")
        print(f"  used_memory delta: {after / size:.0f} bytes per number")
        print(f"  MEMORY USAGE sum: {sum(compact_roles.values()) / size:.0f} bytes per number, "
              "by key:")
        for role, total in compact_roles.most_common():
            if total / size >= 0.5:
                print(f"    {role:<16} {total / size:7.1f}")
        print(f"  gap report: {gaps} gaps; first {first} Redis commands, "
              f"{first_seconds * 1000:.1f} ms; then {sent} Redis commands, "
              f"{seconds * 1000:.1f} ms (median of {repeat})")
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--void-every", type=int, default=1000,
                        help="void every Nth number (the rest are confirmed)")
    parser.add_argument("--repeat", type=int, default=5, help="gap reports timed per size")
    args = parser.parse_args()
    for size in args.sizes:
        run(size, args.void_every, args.repeat)


if __name__ == "__main__":
    main()
