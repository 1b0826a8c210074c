"""Agents that allocate numbers over real HTTP and record every attempt in a ``History``.

An agent retries the *same* reference after no answer, 5xx or 429 (invariant 2 makes that safe)
and gives up on it only at its deadline — so an unacknowledged reference is always explainable.
Run as a module, it is one agent *process* writing its history as JSON lines::

    python -m tests.faults.load URL TOKEN SYSTEM PREFIX COUNT SECONDS OUT.jsonl
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import requests

from tests.faults.history import Attempt, History

RETRY_STATUSES = {429, 500, 502, 503, 504}


def allocate_once(base_url: str, token: str, history: History, system: str, document: str,
                  reference: str, date: str | None, timeout: float = 5.0,
                  session: requests.Session | None = None) -> Attempt:
    """Send one ``POST /v1/allocations`` and record it.

    Without ``session`` each request has its own connection (so a chaos proxy can fault each
    one); with it, connections are kept alive as a real agent's would be.
    """
    attempt = history.begin(system, document, reference, date)
    payload = {"document": document, "reference": reference}
    if date:
        payload["date"] = date
    headers = {"Authorization": f"Bearer {token}"}
    if session is None:
        headers["Connection"] = "close"
    try:
        response = (session or requests).post(
            base_url + "/v1/allocations", json=payload, timeout=timeout, headers=headers)
    except requests.RequestException as error:
        return history.end(attempt, None, error=type(error).__name__)
    try:
        body = response.json()
    except ValueError:
        body = None
    return history.end(attempt, response.status_code, body)


def allocate_until_acked(base_url: str, token: str, history: History, system: str,
                         document: str, reference: str, date: str | None, deadline: float,
                         timeout: float = 5.0) -> Attempt | None:
    """Retry the same reference until it is acknowledged, refused for good, or ``deadline``."""
    pause = 0.02
    while True:
        attempt = allocate_once(base_url, token, history, system, document, reference, date,
                                timeout=min(timeout, max(0.2, deadline - time.monotonic())))
        if attempt.acknowledged:
            return attempt
        if attempt.status is not None and attempt.status not in RETRY_STATUSES:
            return attempt  # a 4xx other than 429: retrying would not help
        if time.monotonic() + pause >= deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def agent_run(base_url: str, token: str, system: str, prefix: str, count: int, seconds: float,
              history: History, documents: tuple[str, ...] = ("invoice",),
              date: str | None = "2026-11-21", stop: Callable[[], bool] = lambda: False,
              grace: float = 20.0) -> int:
    """Allocate ``count`` references ``<prefix>-<i>`` one after another; return how many.

    No new reference starts after ``seconds``; the one in progress may retry ``grace`` seconds
    longer, so a run ends with every reference it started acknowledged unless the coordinator
    stayed down.
    """
    deadline = time.monotonic() + seconds
    done = 0
    for i in range(count):
        if time.monotonic() >= deadline or stop():
            break
        document = documents[i % len(documents)]
        allocate_until_acked(base_url, token, history, system, document, f"{prefix}-{i}",
                             date, deadline + grace)
        done += 1
    return done


def run_threads(jobs: Iterable[Callable[[], object]]) -> list[object]:
    """Run each job in its own thread and return their results (re-raising failures)."""
    jobs = list(jobs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return [f.result() for f in [pool.submit(job) for job in jobs]]


def spawn_agent_process(base_url: str, token: str, system: str, prefix: str, count: int,
                        seconds: float, out: Path) -> subprocess.Popen:
    """Start one agent as a separate Python process (see the module docstring)."""
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.load", base_url, token, system, prefix, str(count),
         str(seconds), str(out)], cwd=root, stdin=subprocess.DEVNULL,
    )


def collect_processes(procs: list[tuple[subprocess.Popen, Path]], history: History,
                      timeout: float) -> None:
    """Wait for agent processes and merge their histories into ``history``."""
    for proc, out in procs:
        proc.wait(timeout)
        assert proc.returncode == 0, f"agent process failed: {proc.returncode}"
        history.extend(History.load(out))


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main(argv: list[str]) -> int:
    url, token, system, prefix, count, seconds, out = argv
    history = History()
    agent_run(url, token, system, prefix, int(count), float(seconds), history)
    history.dump(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
