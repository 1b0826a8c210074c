"""Make numbering data with the release before series (commit 6d52368), for the migration test.

Run by ``test_numbering_migration.py`` in a subprocess whose ``PYTHONPATH`` is a checkout of
that release, so ``coordinator`` below is the *old* code: its app, its Lua scripts, its keys.

    python legacy_release.py <redis url> <output json>

Writes what it did (tokens, every answer) to the output file. Not collected by pytest.
"""

from __future__ import annotations

import json
import sys


def session(url: str) -> tuple:
    """Return a Redis client, admin headers, what was done and ``call`` (one HTTP request to
    an app of the release on ``PYTHONPATH``, recorded in ``done["answers"]``)."""
    from cryptography.fernet import Fernet

    import coordinator
    from coordinator import auth
    from coordinator.app import create_app

    client_redis = __import__("redis").Redis.from_url(url, decode_responses=True)
    admin_token = auth.new_token(auth.ADMIN)
    auth.register_admin_token(client_redis, admin_token)
    admin = {"Authorization": f"Bearer {admin_token}"}
    app = create_app({"TESTING": True, "REDIS_URL": url, "ALLOW_HTTP_SYSTEM_URLS": True,
                      "ALLOW_PRIVATE_SYSTEM_URLS": True,
                      "SECRET_KEYS": Fernet.generate_key().decode()})
    http = app.test_client()
    done: dict = {"code": coordinator.__file__, "answers": [], "admin_token": admin_token}

    def call(method: str, path: str, headers: dict, body: dict | None = None) -> dict:
        response = getattr(http, method)(path, headers=headers, json=body)
        answer = {"method": method, "path": path, "body": body,
                  "status": response.status_code, "json": response.get_json()}
        done["answers"].append(answer)
        return answer

    return client_redis, admin, done, call


def main(url: str, output: str) -> None:
    from coordinator import auth, keys

    client_redis, admin, done, call = session(url)
    admin_token = done["admin_token"]
    # A registered system (its record has no "series": the old release had none).
    blue = call("post", "/v1/systems", admin, {
        "name": "blue", "url": "http://127.0.0.1:9/includes/api.php",
        "api_identifier": "ident", "api_secret": "secret", "auto_sync": False})
    assert blue["status"] == 201, blue
    blue_headers = {"Authorization": f"Bearer {blue['json']['agent_token']}"}
    # A token as the old tests made them (no system record behind it).
    red_token = auth.new_token(auth.AGENT)
    client_redis.hset(keys.TOKENS, auth.digest(red_token), auth.agent_token_record("red"))
    red_headers = {"Authorization": f"Bearer {red_token}"}
    done["tokens"] = {"admin": admin_token, "blue": blue["json"]["agent_token"],
                      "red": red_token}

    # Issue 8 item 1, as reproduced on that release: credit notes end up printing invoices'
    # numbers, so the old ledger holds one formatted number twice.
    for body in ({"dedicated": False}, {"format": "INV-{YEAR}-{NUMBER}"}, {"dedicated": True}):
        assert call("patch", "/v1/sequences/credit_note", admin, body)["status"] == 200
    for ref in ("a1", "a2", "a3"):
        call("post", "/v1/allocations", blue_headers,
             {"document": "invoice", "reference": ref, "date": "2026-03-01"})
    call("post", "/v1/allocations", red_headers,
         {"document": "invoice", "reference": "r1", "date": "2026-03-02"})
    call("post", "/v1/allocations", blue_headers,
         {"document": "invoice", "reference": "old", "date": "2025-12-31"})
    call("post", "/v1/allocations", blue_headers,
         {"document": "credit_note", "reference": "c1", "date": "2026-03-03"})
    first = done["answers"][4]["json"]
    call("post", f"/v1/allocations/{first['id']}/confirm", blue_headers,
         {"invoicenum": first["formatted"]})
    second = done["answers"][5]["json"]
    call("post", f"/v1/allocations/{second['id']}/void", blue_headers,
         {"reason": "deleted before sending"})
    call("patch", "/v1/sequences/invoice", admin, {"next_number": 100, "period": "2026"})
    call("post", "/v1/allocations", red_headers,
         {"document": "invoice", "reference": "r2", "date": "2026-04-01"})
    with open(output, "w") as handle:
        json.dump(done, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
