"""Helpers of the end-to-end agent tests: run the real CLI, in-process or as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str
) -> int:
    """Run ``invoice-sync-agent`` in this process with exactly ``env`` as its configuration."""
    for name in list(os.environ):
        if name.startswith("INVOICE_SYNC_AGENT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return main(list(argv))


def spawn_cli(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    """Start ``python -m agent ARGV`` as its own process (so a test can SIGKILL it)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_SYNC_AGENT_")}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "agent", *argv], env=full, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
