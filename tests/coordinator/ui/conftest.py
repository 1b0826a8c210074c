"""Fixtures of the dashboard tests: the app on the session's Valkey, and a logged-in browser-like
client (https, so the Secure ``__Host-`` cookie is kept, as a browser keeps it)."""

from __future__ import annotations

import re

import pytest
from cryptography.fernet import Fernet

from coordinator import auth

BASE = "https://coordinator.test"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Dashboard:
    """A test client that logs in with a token and fills in CSRF tokens like a browser."""

    def __init__(self, client) -> None:
        self.client = client

    def get(self, path: str, **kwargs):
        return self.client.get(path, base_url=BASE, **kwargs)

    def csrf(self, path: str = "/ui/login") -> str:
        match = _CSRF.search(self.get(path).get_data(as_text=True))
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def post(self, path: str, data: dict | None = None, *, page: str | None = None,
             csrf: bool = True, **kwargs):
        data = dict(data or {})
        page = page or "/ui/login"
        if csrf:
            data["csrf_token"] = self.csrf(page)
        # Browsers send the page's address (Referrer-Policy same-origin); Flask-WTF checks it
        # on https.
        headers = {"Referer": BASE + page, **kwargs.pop("headers", {})}
        return self.client.post(path, data=data, base_url=BASE, headers=headers, **kwargs)

    def login(self, token: str):
        return self.post("/ui/login", {"token": token})


@pytest.fixture
def app_config(app_config):
    return {**app_config, "TESTING": False, "SECRET_KEYS": Fernet.generate_key().decode()}


@pytest.fixture
def dashboard(client) -> Dashboard:
    return Dashboard(client)


@pytest.fixture
def auditor_token(redis_client) -> str:
    """An auditor token, created as ``invoice-sync token create --role auditor`` does."""
    return auth.create_token(redis_client, auth.AUDITOR, "tax advisor", "test")[1]


@pytest.fixture
def as_admin(dashboard, admin_token) -> Dashboard:
    assert dashboard.login(admin_token).status_code == 303
    return dashboard


@pytest.fixture
def as_auditor(dashboard, auditor_token) -> Dashboard:
    assert dashboard.login(auditor_token).status_code == 303
    return dashboard
