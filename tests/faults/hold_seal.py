"""A gunicorn config that holds a worker's ledger sealer before it seals.

The coordinator answers an allocation once its number and ``issued`` event are durable, then
hands the event to the worker's sealer thread (``coordinator.numbering.chain.Sealer``), which
appends its SHA-256 to the chain. Holding the sealer parks the worker exactly in the window
docs/AUDITORS.md describes (event written and acknowledged, its hash not yet appended), so a
test can SIGKILL the coordinator there, every time.

Used with ``GUNICORN_CMD_ARGS="--config python:tests.faults.hold_seal"``; while the file
``$HOLD_SEAL_DIR/hold`` exists, the sealer writes ``$HOLD_SEAL_DIR/held`` (the worker's pid),
so the test knows it is there, and waits instead of sealing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def post_worker_init(worker) -> None:
    """gunicorn hook, in each worker: make the sealer wait while the hold file exists."""
    from coordinator.numbering import chain

    real = chain.seal_appended

    def holding(client, appended):
        directory = os.environ.get("HOLD_SEAL_DIR")
        if directory and Path(directory, "hold").exists():
            Path(directory, "held").write_text(str(os.getpid()))
            time.sleep(600)  # until the test SIGKILLs this process
        return real(client, appended)

    chain.seal_appended = holding
