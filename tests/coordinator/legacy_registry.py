"""Make a systems registry with the release before it moved under ``{auth}`` (commit 0523a88).

Run by ``test_systems_migration.py`` in a subprocess whose ``PYTHONPATH`` is a checkout of
that release, so ``coordinator`` below is the *old* code: its registry, its keys.

    python legacy_registry.py <redis url> <output json>

Writes the tokens it holds, the secret key and every system as the old API listed it.
Not collected by pytest.
"""

from __future__ import annotations

import json
import sys


def main(url: str, output: str) -> None:
    import redis
    from cryptography.fernet import Fernet

    import coordinator
    from coordinator import auth
    from coordinator.app import create_app

    client = redis.Redis.from_url(url, decode_responses=True)
    admin_token = auth.new_token(auth.ADMIN)
    auth.register_admin_token(client, admin_token)
    admin = {"Authorization": f"Bearer {admin_token}"}
    secret_keys = Fernet.generate_key().decode()
    app = create_app({"TESTING": True, "REDIS_URL": url, "ALLOW_HTTP_SYSTEM_URLS": True,
                      "ALLOW_PRIVATE_SYSTEM_URLS": True, "SECRET_KEYS": secret_keys})
    http = app.test_client()

    def ok(response, status: int) -> dict:
        assert response.status_code == status, (response.status_code, response.data)
        return response.get_json(silent=True)

    ok(http.post("/v1/series", headers=admin, json={"name": "acme"}), 201)
    tokens = {}
    for name, series in (("blue", "default"), ("red", "acme"), ("orange", "default"),
                         ("green", "default")):
        created = ok(http.post("/v1/systems", headers=admin, json={
            "name": name, "url": f"http://127.0.0.1:9/{name}/includes/api.php",
            "api_identifier": f"id-{name}", "api_secret": f"secret-{name}",
            "access_key": f"key-{name}", "auto_sync": False, "series": series,
            "description": f"the {name} WHMCS"}), 201)
        tokens[name] = created["agent_token"]
    # orange's first token was rotated away; green was deleted (its token died with it).
    tokens["orange-retired"] = tokens["orange"]
    tokens["orange"] = ok(http.post("/v1/systems/orange/agent-token", headers=admin), 200)[
        "agent_token"]
    tokens["green-deleted"] = tokens.pop("green")
    ok(http.delete("/v1/systems/green", headers=admin), 204)
    numbers = {}
    for name in ("blue", "red", "orange"):
        numbers[name] = ok(http.post(
            "/v1/allocations", headers={"Authorization": f"Bearer {tokens[name]}"},
            json={"document": "invoice", "reference": f"{name}-1", "date": "2026-03-01"}), 201)
    # What the forecaster stored for blue: stays with blue across the upgrade.
    client.hset("{sys:blue}:invoices", "17", "{}")
    with open(output, "w") as handle:
        json.dump({"code": coordinator.__file__, "admin": admin_token, "tokens": tokens,
                   "secret_keys": secret_keys, "numbers": numbers,
                   "systems": ok(http.get("/v1/systems", headers=admin), 200)}, handle,
                  indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
