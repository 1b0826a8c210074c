"""Glue shared by the fault scenarios: set up systems and tokens, read back, print the verdict."""

from __future__ import annotations

import time

import redis

from tests.faults.conftest import http_fetch, register_admin, register_agent_token
from tests.faults.history import History, Verdict, check, read_all_ledgers

SYSTEMS = ("blue", "red", "orange")
DATE = "2026-11-21"


def agent_tokens(client: redis.Redis, systems: tuple[str, ...] = SYSTEMS) -> dict[str, str]:
    """One agent token per system, stored the way the coordinator stores them."""
    return {name: register_agent_token(client, name) for name in systems}


def verify(base_url: str, admin_token: str, history: History, label: str,
           retries: int = 20) -> Verdict:
    """Read every touched ledger back through the coordinator, check, print the verdict line."""
    fetch = http_fetch(base_url, admin_token)
    for attempt in range(retries):
        try:
            ledger = read_all_ledgers(fetch, history)
            break
        except Exception:  # the coordinator may still be recovering from the fault
            if attempt == retries - 1:
                raise
            time.sleep(0.5)
    verdict = check(history, ledger)
    check_chains(fetch, history, verdict)
    print(verdict.line(label))
    return verdict


def check_chains(fetch, history: History, verdict: Verdict) -> None:
    """Add to ``verdict`` the hash chain of each sequence the history touched: it must verify,
    and hold an ``issued`` event for every number (none lost with a crash, see
    docs/AUDITORS.md); its event count goes into the counts."""
    for sequence in sorted({sequence for sequence, _ in history.slots_touched()}):
        status, result = fetch(f"/v1/series/default/sequences/{sequence}/ledger/verify")
        if status != 200 or not result.get("ok") or result.get("unchained_numbers"):
            verdict.violations.append(f"ledger chain of {sequence} does not verify: {result}")
        else:
            verdict.counts[f"chained_{sequence}"] = result["events"]


__all__ = ["DATE", "SYSTEMS", "agent_tokens", "register_admin", "verify"]
