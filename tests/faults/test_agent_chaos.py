"""The real agent through a hostile network: ``agent.Client`` and ``invoice-sync-agent next``.

test_network_chaos.py drives the coordinator with the harness's own retry loop; here the agent
itself does the retrying, with its own policy, through the TCP chaos proxy in front of a real
coordinator (gunicorn on its own Valkey). The proxy delays connections, resets them, cuts
requests mid-way and cuts answers mid-way (the coordinator did the work, the agent never heard).

Two histories are checked against the ledger read back afterwards:

- **wire**: every HTTP request the client sent and what came back (a requests adapter under
  the client records them), so a cut answer followed by a replay is visible;
- **agent**: every ``Client.allocate`` call and what it returned — the numbers an agent would
  write into WHMCS. A call that raised (its retries ran out) is called again later with the same
  reference, as the poller's next run would.

Both must show: each reference exactly one number, no number acknowledged for two references,
every ledger entry acknowledged (a number whose answer was cut is the very number the replay
returned), and no gap from number 1 on. Then the same through the CLI, one subprocess per
``next`` call (exit 3 = no number, retried later with the same reference), in another period.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import requests
from requests.adapters import HTTPAdapter

from agent import Client, CoordinatorError, RetryPolicy
from tests.faults.chaos import ChaosProxy, weighted_policy
from tests.faults.conftest import http_fetch
from tests.faults.history import History, Verdict, check, read_all_ledgers
from tests.faults.load import run_threads
from tests.faults.scenario import SYSTEMS, agent_tokens, register_admin

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]

WEIGHTS = {"pass": 5, "delay": 2, "refuse": 1, "cut_request": 1, "cut_response": 2,
           "blackhole": 0.2}

CLI_WEIGHTS = {"pass": 4, "delay": 1, "cut_request": 1, "cut_response": 3}
"""The CLI retries with its fixed backoff (0.5 s doubling): no black holes, fewer refusals, so
the short run stays short; answers are still cut often."""

CLIENT_DATE, CLI_DATE = "2026-11-21", "2025-06-30"
"""Different years, so the two parts number in separate (sequence, period) ledgers."""


class RecordingAdapter(HTTPAdapter):
    """Record every request the client sends (the wire history); ``Connection: close`` so each
    request meets its own fate at the proxy, like the agents of test_network_chaos.py."""

    def __init__(self, history: History, system: str) -> None:
        super().__init__()
        self.history, self.system = history, system
        self.last = threading.local()

    def send(self, request: requests.PreparedRequest, *args, **kwargs) -> requests.Response:
        request.headers["Connection"] = "close"
        body = json.loads(request.body) if request.body else {}
        attempt = self.history.begin(self.system, body.get("document", "?"),
                                     str(body.get("reference", "?")), body.get("date"))
        self.last.status = None
        try:
            response = super().send(request, *args, **kwargs)
            response.content  # noqa: B018 - read the body here: a cut may come inside it
        except requests.RequestException as error:
            self.history.end(attempt, None, error=type(error).__name__)
            raise
        try:
            data = response.json()
        except ValueError:
            data = None
        self.history.end(attempt, response.status_code, data)
        self.last.status = response.status_code
        return response


def agent_loop(url: str, token: str, system: str, prefix: str, seconds: float,
               wire: History, told: History, gave_up: Counter) -> int:
    """One agent: allocate ``<prefix>-<i>`` until ``seconds`` pass; every reference started is
    asked again (same reference) until the client returns a number, within a bounded grace."""
    adapter = RecordingAdapter(wire, system)
    client = Client(url=url, token=token, timeout=2.0, transport=adapter,
                    retry=RetryPolicy(attempts=5, backoff=0.01, backoff_max=0.1))
    deadline = time.monotonic() + seconds
    done = 0
    with client:
        while time.monotonic() < deadline:
            document = ("invoice", "credit_note")[done % 2]
            reference = f"{prefix}-{done}"
            for _ in range(50):  # bounded: the agent's next run, again and again
                attempt = told.begin(system, document, reference, CLIENT_DATE)
                try:
                    allocation = client.allocate(document, reference, CLIENT_DATE)
                except CoordinatorError as error:
                    told.end(attempt, None, error=type(error).__name__)
                    gave_up[type(error).__name__] += 1
                    continue
                told.end(attempt, adapter.last.status, allocation.to_json())
                break
            done += 1
    return done


def check_from_one(url: str, admin: str, history: History, label: str) -> Verdict:
    """Read back every ledger the history touched and check it, numbers contiguous from 1."""
    ledger = read_all_ledgers(http_fetch(url, admin), history)
    first = {(a.slot[0], a.slot[1]): 1 for a in history.acknowledged}
    verdict = check(history, ledger, first_number=first)
    print(verdict.line(label))
    return verdict


def replayed_after_cut(wire: History) -> int:
    """References whose request got no answer and that a later request answered with 200."""
    by_ref: dict = {}
    for a in sorted(wire.attempts, key=lambda a: a.started):
        by_ref.setdefault(a.ref, []).append(a)
    return sum(
        1 for attempts in by_ref.values()
        if any(a.status is None and any(b.status == 200 for b in attempts[i + 1:])
               for i, a in enumerate(attempts))
    )


POST_LINE = re.compile(r'"POST /v1/allocations HTTP/1\.1" (\d{3})')


def cli_next(url: str, token: str, document: str, reference: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_SYNC")}
    env.update(PYTHONPATH=str(ROOT), INVOICE_SYNC_AGENT_URL=url, INVOICE_SYNC_AGENT_TOKEN=token,
               INVOICE_SYNC_AGENT_TIMEOUT="2",
               # No journal: `next` would check its numbers against one found at the default
               # path, which may hold another coordinator's numbers on this machine.
               XDG_STATE_HOME=str(ROOT / ".no-such-state-dir"))
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "-vv", "next", document, "--reference", reference,
         "--date", CLI_DATE, "--json"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def cli_agent(url: str, token: str, system: str, count: int, history: History,
              exits: Counter) -> None:
    """``count`` documents, one ``invoice-sync-agent next`` process per try; exit 3 (no number
    after the CLI's own retries) is tried again with the same reference, as cron would."""
    for i in range(count):
        document = ("invoice", "credit_note")[i % 2]
        reference = f"cli-{system}-{i}"
        for _ in range(10):
            attempt = history.begin(system, document, reference, CLI_DATE)
            code, out, err = cli_next(url, token, document, reference)
            exits[code] += 1
            if code == 0:
                # The status of the answer it printed: the last POST in urllib3's debug log.
                statuses = POST_LINE.findall(err)
                history.end(attempt, int(statuses[-1]) if statuses else 201, json.loads(out))
                break
            assert code == 3, f"exit {code}: {err[-2000:]}"
            history.end(attempt, None, error="exit 3")


def _run(gunicorn, own_valkey, *, seconds: float, agents: int, cli_per_system: int, seed: int):
    client = redis.Redis.from_url(own_valkey.url, decode_responses=True)
    tokens = agent_tokens(client)
    admin = register_admin(client)
    coordinator = gunicorn({"REDIS_URL": own_valkey.url}, workers=2, threads=4)
    wire, told, cli = History(), History(), History()
    gave_up: Counter = Counter()
    exits: Counter = Counter()
    policies = [weighted_policy(seed, WEIGHTS), weighted_policy(seed + 1, CLI_WEIGHTS)]
    with ChaosProxy(("127.0.0.1", coordinator.port), lambda: policies[0](),
                    hold_limit=1) as proxy:
        started = time.monotonic()
        run_threads(
            (lambda i=i: agent_loop(proxy.url, tokens[SYSTEMS[i % 3]], SYSTEMS[i % 3],
                                    f"a{i}", seconds, wire, told, gave_up))
            for i in range(agents))
        client_s = time.monotonic() - started
        client_stats = dict(proxy.stats)
        policies.pop(0)
        started = time.monotonic()
        run_threads(
            (lambda s=s: cli_agent(proxy.url, tokens[s], s, cli_per_system, cli, exits))
            for s in SYSTEMS)
        cli_s = time.monotonic() - started
    cli_stats = dict(proxy.stats - Counter(client_stats))

    wire_verdict = check_from_one(coordinator.url, admin, wire, "agent.Client, every request")
    told_verdict = check_from_one(coordinator.url, admin, told, "agent.Client, numbers returned")
    replays = replayed_after_cut(wire)
    print(f"  client: {len(told.acknowledged)} numbers returned in {client_s:.1f}s, "
          f"{len(wire.attempts)} requests, {replays} references replayed after a lost answer, "
          f"calls that raised: {dict(gave_up) or 0}; proxy: {client_stats}")
    cli_verdict = check_from_one(coordinator.url, admin, cli, "invoice-sync-agent next")
    print(f"  cli: {len(cli.acknowledged)} numbers in {cli_s:.1f}s, exit codes {dict(exits)}; "
          f"proxy: {cli_stats}")

    for verdict in (wire_verdict, told_verdict, cli_verdict):
        assert verdict.ok, verdict.line()
        assert verdict.counts["acked_refs"] == verdict.counts["references"]
        assert verdict.counts["issued_unacked"] == 0 and verdict.counts["gaps"] == 0
    # What the client returned is what the wire acknowledged last for that reference.
    last_ack = {a.ref: a.slot for a in sorted(wire.acknowledged, key=lambda a: a.finished)}
    assert {a.ref: a.slot for a in told.acknowledged} == last_ack
    assert client_stats.get("cut_response", 0) > 0 and replays > 0, \
        "answers must have been lost and their numbers replayed"
    assert told_verdict.counts["replays"] > 0
    assert cli_verdict.counts["acked_refs"] == 3 * cli_per_system
    assert cli_stats.get("cut_response", 0) > 0 and cli_verdict.counts["replays"] > 0, \
        "the CLI too must have lost answers and got the same numbers back"


def test_agent_through_chaos_short(gunicorn, own_valkey):
    _run(gunicorn, own_valkey, seconds=3, agents=6, cli_per_system=2, seed=21)


@pytest.mark.slow
def test_agent_through_chaos_long(gunicorn, own_valkey):
    _run(gunicorn, own_valkey, seconds=60, agents=12, cli_per_system=20, seed=22)
