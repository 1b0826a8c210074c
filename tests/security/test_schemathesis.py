"""Property-based fuzzing of every operation in /openapi.json (schemathesis 4, in-process WSGI).

Schemathesis' lazy pytest loader (``schemathesis.pytest.from_fixture``) reads pytest's private
``node._nodeid``, gone in pytest 9; so each operation's hypothesis strategy is driven directly.

Valid and invalid requests (schemathesis' positive and negative modes) go to the real app on a
real Valkey, as admin or as an agent depending on the operation. For every answer: no 5xx;
every error in the one shape ``{code, status, message, errors}``; and a rejected request
changed nothing (a DUMP of every key before and after). Bounded and deterministic for CI:
``derandomize`` and a small ``max_examples`` (``--long`` raises it).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import schemathesis
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.forecaster import reconcile_state
from tests.security.conftest import snapshot

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 15


def _public_resolver(host: str, port: int) -> list[str]:
    # No DNS from the tests: every name is a public address (the URL policy still runs).
    return ["93.184.216.34"]


@pytest.fixture
def fuzz_app(app_config, redis_client):
    app = create_app({**app_config, "SECRET_KEYS": Fernet.generate_key().decode(),
                      "SYSTEM_URL_RESOLVER": _public_resolver,
                      "ALLOW_HTTP_SYSTEM_URLS": False, "ALLOW_PRIVATE_SYSTEM_URLS": False})
    return app


@pytest.fixture
def tokens(redis_client, fuzz_app):
    admin = auth.new_token(auth.ADMIN)
    auth.register_admin_token(redis_client, admin)
    agent = auth.new_token(auth.AGENT)
    redis_client.hset(keys.TOKENS, auth.digest(agent), auth.agent_token_record("blue"))
    client = fuzz_app.test_client()
    # Something to find: one allocation, so ids and ledgers are not all empty.
    client.post("/v1/allocations", json={"document": "invoice", "reference": "seed",
                                         "date": "2026-11-21"},
                headers={"Authorization": f"Bearer {agent}"})
    # The reconciliation's findings, as serve builds them at start (503 before: documented).
    reconcile_state.refresh(redis_client)
    return {"admin": admin, "agent": agent}


def _headers_for(operation, tokens) -> dict:
    # The document says which roles an operation accepts; prefer admin where it may.
    roles = operation.definition.raw.get("x-token-roles", [])
    role = "admin" if "admin" in roles or not roles else "agent"
    return {"Authorization": f"Bearer {tokens[role]}"}


def _check(case, response, before, redis_client) -> str | None:
    """Return what is wrong with one answer, or None."""
    summary = f"{case.method} {case.formatted_path} -> {response.status_code}"
    if response.status_code >= 500:
        return f"{summary}: {response.content[:200]!r}"
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"{summary}: error body is not JSON: {response.content[:200]!r}"
    if not (isinstance(body, dict) and set(body) == {"code", "status", "message", "errors"}
            and body.get("code") == response.status_code and body.get("message")):
        return f"{summary}: not the error shape: {body}"
    if snapshot(redis_client) != before:
        return f"{summary}: rejected but changed Redis"
    return None


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_fuzz_every_operation(request, fuzz_app, tokens, redis_client, mode):
    """Every operation of /openapi.json, ``MAX_EXAMPLES`` generated requests each."""
    examples = MAX_EXAMPLES * (8 if request.config.getoption("--long") else 1)
    api_schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    problems: list[str] = []
    statuses: Counter = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10, "the schema lists the API's operations"

    def fuzz(operation) -> None:
        headers = _headers_for(operation, tokens)

        @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            before = snapshot(redis_client)
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            problem = _check(case, response, before, redis_client)
            if problem and len(problems) < 50:
                problems.append(problem)

        run()

    impossible = []
    timings: dict[str, float] = {}
    for operation in operations:
        started = time.monotonic()
        if mode is GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
            # Only path parameters: free strings have no invalid value, and hypothesis spends
            # seconds proving it. test_hostile_input covers hostile paths explicitly.
            impossible.append(operation.label)
            continue
        try:
            fuzz(operation)
        except Unsatisfiable:  # e.g. no invalid request exists for GET /livez
            impossible.append(operation.label)
        timings[operation.label] = time.monotonic() - started
    total = sum(statuses.values())
    print(f"schemathesis {mode.value}: {len(operations)} operations, {total} requests, "
          f"statuses {dict(sorted(statuses.items()))}, problems {len(problems)}; "
          f"nothing to generate for {len(impossible)}: {impossible}")
    slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:3]
    print("  slowest: " + ", ".join(f"{label} {t:.1f}s" for label, t in slowest))
    assert not problems, "\n".join(problems)
