"""Fixtures the ledger tests share: an app with a Fernet key and no rate limits, the agent
headers of a registered system ``blue``, and an auditor's headers.

Import them into a test module (``from tests.coordinator.ledger_support import ...``).
"""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from coordinator import auth
from tests.coordinator.systems_support import FakeResolver, body


def ledger_config(base: dict) -> dict:
    """``base`` with a Fernet key, a fake resolver and no rate limits."""
    return {**base, "SECRET_KEYS": Fernet.generate_key().decode(),
            "SYSTEM_URL_RESOLVER": FakeResolver(), "RATE_LIMIT_AGENT": 0,
            "RATE_LIMIT_ADMIN": 0, "RATE_LIMIT_AUDITOR": 0}


@pytest.fixture
def app_config(app_config):
    return ledger_config(app_config)


@pytest.fixture
def blue(client, admin):
    """Agent headers of system ``blue``, registered through ``POST /v1/systems``."""
    response = client.post("/v1/systems", headers=admin, json=body(name="blue"))
    assert response.status_code == 201, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['agent_token']}"}


@pytest.fixture
def auditor(redis_client):
    """Headers of an auditor token."""
    token = auth.create_token(redis_client, auth.AUDITOR, "tax office", "cli")[1]
    return {"Authorization": f"Bearer {token}"}
