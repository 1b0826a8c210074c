"""Guards of the agent's coordinator client that the mutation run (issue 17) found without a
test."""

from __future__ import annotations

import pytest

from agent import Client, CoordinatorUnreachable
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
