"""Guards of the agent's coordinator client that the mutation run (issue 17) found without a
test."""

from __future__ import annotations

import random
import socket

import pytest

from agent import Client, CoordinatorUnreachable, RetryPolicy
from tests.agent.test_whmcs_client import self_signed  # noqa: F401 - a fixture, used by name

from .conftest import FAST, TOKEN, FakeCoordinator, Sleeps


def test_the_coordinators_certificate_is_verified_unless_a_ca_bundle_trusts_it(
    self_signed, sleeps: Sleeps  # noqa: F811
) -> None:
    """The agent token goes to the real coordinator only: a certificate nothing trusts is
    refused before any request (and not retried); `ca_bundle` trusts a private CA."""
    context, ca_path = self_signed
    fake = FakeCoordinator()
    fake.server.socket = context.wrap_socket(fake.server.socket, server_side=True)
    fake.start()
    try:
        url = f"https://localhost:{fake.server.server_address[1]}"
        with pytest.raises(CoordinatorUnreachable) as refused:
            Client(url=url, token=TOKEN, retry=FAST, sleep=sleeps).allocate("invoice", "1")
        message = str(refused.value)
        assert message.startswith(f"TLS verification of {url} failed (")
        assert message.endswith("); check the certificate or set ca_bundle")
        assert fake.requests == [] and sleeps == []
        trusted = Client(url=url, token=TOKEN, ca_bundle=ca_path, retry=FAST, sleep=sleeps)
        assert trusted.allocate("invoice", "1").reference == "1"
    finally:
        fake.stop()


def test_the_token_goes_only_where_the_coordinator_asks_for_it(sleeps: Sleeps) -> None:
    """`status()` probes /livez and /readyz without the agent token (a load balancer or a
    proxy in front of them need not see it) and sends it to /v1/whoami; the headers are read
    on the server side of a real loopback connection."""
    fake = FakeCoordinator()
    seen: list[tuple[str, str | None]] = []
    handle = fake._handle

    def recording(req):  # the fake's handler calls this attribute for every request
        seen.append((req.path, req.headers.get("Authorization")))
        handle(req)

    fake._handle = recording
    fake.start()
    try:
        with Client(url=fake.url, token=TOKEN, retry=FAST, sleep=sleeps) as client:
            status = client.status()
    finally:
        fake.stop()
    assert (status.live, status.ready, status.token_valid) == (True, True, True)
    assert seen[:3] == [("/livez", None), ("/readyz", None), ("/v1/whoami", f"Bearer {TOKEN}")]
    assert all(auth == f"Bearer {TOKEN}" for _, auth in seen[2:])


def test_the_client_waits_between_retries_of_an_unreachable_coordinator(sleeps: Sleeps) -> None:
    """Nobody listens on the port (a real refused connection): before each retry the client
    waits the policy's growing, jittered backoff ("equal jitter": between half a step and a
    step, the step doubling from `backoff` up to `backoff_max`)."""
    with socket.socket() as probe:  # a free loopback port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(attempts=4, backoff=1.0, backoff_max=3.0)
    with pytest.raises(CoordinatorUnreachable, match=r"after 4 attempt\(s\)"):
        Client(url=f"http://127.0.0.1:{port}", token=TOKEN, retry=policy, sleep=sleeps,
               rng=random.Random(17)).allocate("invoice", "1")
    assert len(sleeps) == 3
    for wait, (low, high) in zip(sleeps, [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0)], strict=True):
        assert isinstance(wait, float) and low <= wait <= high
