"""Helpers for the systems tests: a fake resolver, every Redis value readable, request bodies."""

from __future__ import annotations

import socket
from typing import Any

import redis

SECRET = "whmcs-SECRET-plaintext-7f3a"
ACCESS_KEY = "whmcs-ACCESSKEY-plaintext-91b2"
URL = "https://billing.blue.example/includes/api.php"

PUBLIC_DNS = {
    "billing.blue.example": ["93.184.216.34"],
    "billing.red.example": ["93.184.216.35", "2606:2800:220:1:248:1893:25c8:1946"],
    "rebind.example": ["10.0.0.7"],
    "mixed.example": ["93.184.216.36", "127.0.0.1"],
    "metadata-alias.example": ["169.254.169.254"],
}


class FakeResolver:
    """Answer from a table (no real DNS in tests); ``table`` can be changed to rebind a name."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = dict(PUBLIC_DNS if table is None else table)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


def body(**overrides: Any) -> dict[str, Any]:
    """A valid POST /v1/systems body, with overrides (``None`` values are kept)."""
    data = {"name": "blue", "description": "EU brand", "url": URL, "api_identifier": "ident-blue",
            "api_secret": SECRET, "access_key": ACCESS_KEY, "step": 100, "auto_sync": True,
            "exchange_rate": "1.0000"}
    data.update(overrides)
    return data


def values(client: redis.Redis) -> dict[str, Any]:
    """Every key with its type and full value, readable (DUMP may compress long strings)."""
    out: dict[str, Any] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = None
        out[key] = (kind, value)
    return out


def raw_dump(client: redis.Redis) -> str:
    """All keys and values as one string, to search for plaintext."""
    return repr(values(client))


def registry_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """``app_config`` for tests that register systems over the API (secrets, no real DNS, no
    rate limits)."""
    from cryptography.fernet import Fernet

    return {**app_config, "SECRET_KEYS": Fernet.generate_key().decode(),
            "SYSTEM_URL_RESOLVER": FakeResolver(), "RATE_LIMIT_AGENT": 0,
            "RATE_LIMIT_ADMIN": 0}


def register(client: Any, admin: dict[str, str], name: str,
             series: str | None = None) -> dict[str, str]:
    """Register system ``name`` (in ``series``) with POST /v1/systems; its agent's headers."""
    extra = {} if series is None else {"series": series}
    response = client.post("/v1/systems", headers=admin, json=body(name=name, **extra))
    assert response.status_code == 201, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['agent_token']}"}
