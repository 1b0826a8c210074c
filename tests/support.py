"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
import redis

from coordinator.keys import RATE_LIMIT_PREFIX


def snapshot(target: str | redis.Redis) -> dict[bytes, bytes]:
    """Return every data key with its DUMP, to prove a request changed nothing.

    Rate-limit counters are left out: every request, accepted or not, is counted against its
    token by design, and they expire on their own.
    """
    raw = redis.Redis.from_url(target) if isinstance(target, str) else redis.Redis(
        connection_pool=redis.ConnectionPool(**{
            **target.connection_pool.connection_kwargs, "decode_responses": False})
    )
    try:
        return {
            key: raw.dump(key)
            for key in sorted(raw.scan_iter(count=1000))
            if not key.startswith(RATE_LIMIT_PREFIX.encode())
        }
    finally:
        raw.close()


REQUIRE_TOOLS = "INVOICE_SYNC_REQUIRE_TOOLS"
"""Set to 1 by .ci/run: CI installs every tool the tests use, so a missing one is a failure."""


def tools_required() -> bool:
    """Whether a missing tool must fail the test instead of skipping it (see REQUIRE_TOOLS)."""
    return os.environ.get(REQUIRE_TOOLS, "").strip().lower() in {"1", "true", "yes", "on"}


def missing_tool(reason: str) -> None:
    """Skip for a missing tool, or fail when INVOICE_SYNC_REQUIRE_TOOLS says CI installed it."""
    if tools_required():
        pytest.fail(f"{reason} (and {REQUIRE_TOOLS} is set: CI must install it)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, install: str | None = None) -> str:
    """Return the path of command ``name``; skip (or fail in CI) when it is not installed."""
    found = shutil.which(name)
    if found is None:
        hint = f" (apt-get install -y {install or name})"
        missing_tool(f"{name} is not installed{hint}; NOT tested")
    return found


def interrupt(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server process the way Ctrl-C does; kill it if it does not exit in ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
