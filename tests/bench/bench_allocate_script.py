"""The single allocation's script before and after allocate.lua took N items, same run.

Not part of the test suite. One Valkey (AOF, appendfsync always); both scripts number one
document per call with the same KEYS/ARGV (the N-item script's batch of one), each call followed
by ``WAITAOF`` in the same round trip as the coordinator sends it. Rounds alternate old/new.

    python tests/bench/bench_allocate_script.py --baseline e877714 --calls 3000 --rounds 5
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from coordinator import keys  # noqa: E402
from coordinator.numbering.sequences import MAX_NUMBER, ensure_sequences  # noqa: E402
from coordinator.ops.embedded import ValkeyServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="e877714", help="git revision of the old script")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-wait", action="store_true",
                        help="leave WAITAOF out: the scripts' own cost, not the fsync's")
    args = parser.parse_args()
    sources = {
        "old": subprocess.run(
            ["git", "show", f"{args.baseline}:coordinator/numbering/allocate.lua"],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout,
        "new": (ROOT / "coordinator/numbering/allocate.lua").read_text(),
    }
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp) / "valkey") as valkey:
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        if args.no_wait:
            client.config_set("appendfsync", "everysec")
        ensure_sequences(client, "default")
        shas = {kind: client.script_load(src) for kind, src in sources.items()}
        assert all(shas[k] == hashlib.sha1(sources[k].encode()).hexdigest() for k in shas)
        seq_keys = [keys.seq_settings("invoice", "default"), keys.seq_stats("invoice", "default"),
                    keys.seq_refs("invoice", "invoice", "blue", "default"),
                    keys.seq_periods("invoice", "default"),
                    keys.seq_counter("invoice", "2026", "default"),
                    keys.seq_ledger("invoice", "2026", "default"),
                    keys.seq_ledger_order("invoice", "2026", "default"),
                    keys.series_members("default"), keys.series_formatted("default"),
                    # the ledger chain's events and hashes (since issue 11); a script from
                    # before them reads only the first nine keys
                    keys.seq_events("invoice", "default"), keys.seq_chain("invoice", "default")]
        results: dict[str, list[float]] = {"old": [], "new": []}
        usec: dict[str, list[float]] = {"old": [], "new": []}
        for number in range(args.rounds):
            for kind in (("old", "new") if number % 2 == 0 else ("new", "old")):
                client.config_resetstat()
                start = time.perf_counter()
                for i in range(args.calls):
                    pipe = client.pipeline(transaction=False)
                    pipe.evalsha(shas[kind], len(seq_keys), *seq_keys, "invoice", "blue",
                                 f"{kind}-{number}-{i}", "2026-03-03", "2026", "yearly",
                                 "2026-03-03T00:00:00Z", MAX_NUMBER, "invoice", "", "1")
                    if not args.no_wait:
                        pipe.execute_command("WAITAOF", 1, 0, 1000)
                    reply = pipe.execute()[0]
                    assert reply[0] in ("new", "ok"), reply
                results[kind].append(args.calls / (time.perf_counter() - start))
                # The server's own time in the script: steadier than wall time when shared.
                usec[kind].append(float(client.info("commandstats")["cmdstat_evalsha"][
                    "usec_per_call"]))
            print(f"round {number + 1}: old {results['old'][-1]:8.1f}/s "
                  f"({usec['old'][-1]:.1f} us in script)  new {results['new'][-1]:8.1f}/s "
                  f"({usec['new'][-1]:.1f} us in script)", flush=True)
        old, new = statistics.median(results["old"]), statistics.median(results["new"])
        old_us, new_us = statistics.median(usec["old"]), statistics.median(usec["new"])
        print(f"median: old {old:.1f}/s, new {new:.1f}/s, new/old {new / old:.2f}; "
              f"script time old {old_us:.1f} us, new {new_us:.1f} us, new/old "
              f"{new_us / old_us:.2f}")
        client.close()


if __name__ == "__main__":
    main()
