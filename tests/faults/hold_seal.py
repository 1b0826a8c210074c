"""A gunicorn logger class that holds a worker between an allocation's response and its seal.

gunicorn's gthread worker sends the response (``resp.close()``), then writes the access line
(``self.log.access``), and only then closes the WSGI iterable, which runs the coordinator's
``call_on_close`` hook: the seal of the new ledger event. Holding ``access`` therefore parks the
worker exactly in the window docs/AUDITORS.md describes (event written and acknowledged, its
hash not yet appended), so a test can SIGKILL the coordinator there, every time.

Used with ``--logger-class tests.faults.hold_seal.HoldingLogger``; it holds a
``POST /v1/allocations`` while the file ``$HOLD_SEAL_DIR/hold`` exists, after writing
``$HOLD_SEAL_DIR/held`` (the worker's pid) so the test knows it is there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gunicorn.glogging import Logger


class HoldingLogger(Logger):
    """gunicorn's logger, parking an allocation's worker thread before its seal."""

    def access(self, resp, req, environ, request_time) -> None:
        directory = os.environ.get("HOLD_SEAL_DIR")
        if (directory and environ.get("REQUEST_METHOD") == "POST"
                and environ.get("PATH_INFO") == "/v1/allocations"
                and Path(directory, "hold").exists()):
            Path(directory, "held").write_text(str(os.getpid()))
            time.sleep(600)  # until the test SIGKILLs this process
        super().access(resp, req, environ, request_time)
