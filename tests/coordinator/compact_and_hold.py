"""Compact the ``invoice`` ledger of the default series and park after the first block that
``scripts.<NAME>`` moves, for the kill -9 test of ``test_numbering_compaction.py``.

    python compact_and_hold.py <redis url> <marker file> <SETTLE | COMPACT>

Touches the marker file once that block is written, then sleeps until killed. Not collected by
pytest.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import redis

from coordinator.numbering import compaction, scripts


def main(url: str, marker: str, name: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    real = getattr(scripts, name)

    def write_then_park(conn, keys, args):
        reply = real(conn, keys, args)
        Path(marker).touch()
        time.sleep(600)  # the test kills the process here
        return reply

    setattr(scripts, name, write_then_park)
    compaction.run(client, "invoice", {"LEDGER_ARCHIVE_BLOCK": 3, "LEDGER_ARCHIVE_KEEP": 1,
                                       "LEDGER_SETTLE_AFTER_SECONDS": 0})


if __name__ == "__main__":
    main(*sys.argv[1:4])
