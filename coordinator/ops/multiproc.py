"""Prepare prometheus_client's multiprocess mode for gunicorn, without importing it too early.

prometheus_client decides once, when it is first imported, whether metric values live in
per-process files (``PROMETHEUS_MULTIPROC_DIR`` set) or in memory. So the directory must be in
the environment before anything imports it: this module imports prometheus_client only inside
the gunicorn hooks, and ``coordinator.cli`` must not import it at module level (a test checks).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` empty (files of a previous run would be summed in) and export it.

    Call in the gunicorn master before any worker forks.
    """
    directory = Path(path).resolve()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[ENV] = str(directory)
    return directory


def on_starting(server) -> None:
    """gunicorn hook (master, before workers): empty the multiprocess directory if one is set."""
    path = os.environ.get(ENV)
    if path:
        prepare_dir(path)


def child_exit(server, worker) -> None:
    """gunicorn hook (master): drop a dead worker's live gauges so they stop being summed."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
