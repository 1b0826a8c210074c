"""The systems HTTP API against a real Valkey: CRUD, secrets never shown, auth, bad input."""

from __future__ import annotations

import json
import logging
import re

import pytest
from cryptography.fernet import Fernet

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.systems.secrets import generate_key
from coordinator.systems.urls import check_url_shape
from tests.coordinator.systems_support import (
    ACCESS_KEY,
    SECRET,
    URL,
    FakeResolver,
    body,
    raw_dump,
)
from tests.support import snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def secret_key() -> str:
    return generate_key()


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def app_config(app_config, secret_key, resolver):
    return {**app_config, "SECRET_KEYS": secret_key, "SYSTEM_URL_RESOLVER": resolver}


@pytest.fixture
def strict_client(app_config, redis_client):
    """A client of an app with the production URL policy: https only, SSRF guard on."""
    config = {**app_config, "ALLOW_HTTP_SYSTEM_URLS": False, "ALLOW_PRIVATE_SYSTEM_URLS": False}
    return create_app(config).test_client()


def assert_error(response, code):
    assert response.status_code == code, response.get_json()
    payload = response.get_json()
    assert payload["code"] == code
    assert isinstance(payload["status"], str) and payload["message"]
    return payload


def assert_no_plaintext(response):
    text = response.get_data(as_text=True)
    assert SECRET not in text and ACCESS_KEY not in text
    for item in ([response.get_json()] if isinstance(response.get_json(), dict)
                 else response.get_json() or []):
        assert "api_secret" not in item and "access_key" not in item
        assert "agent_token_digest" not in item and "api_secret_enc" not in item


def test_create_returns_system_and_token_once(client, admin, redis_client):
    response = client.post("/v1/systems", json=body(), headers=admin)
    assert response.status_code == 201, response.get_json()
    system = response.get_json()
    assert_no_plaintext(response)
    assert system["name"] == "blue" and system["url"] == URL
    assert system["has_api_secret"] is True and system["has_access_key"] is True
    assert system["step"] == 100 and system["auto_sync"] is True
    assert system["exchange_rate"] == "1.0000"
    assert system["created_at"].endswith("Z") and system["updated_at"] == system["created_at"]
    token = system["agent_token"]
    assert token.startswith("isg_")
    principal = auth.authenticate(redis_client, f"Bearer {token}", None)
    assert (principal.kind, principal.system) == ("agent", "blue")
    # Later reads never show the token again.
    again = client.get("/v1/systems/blue", headers=admin)
    assert "agent_token" not in again.get_json()
    assert token not in again.get_data(as_text=True)


def test_defaults(client, admin):
    data = body()
    for optional in ("description", "access_key", "step", "auto_sync", "exchange_rate"):
        del data[optional]
    system = client.post("/v1/systems", json=data, headers=admin).get_json()
    assert (system["description"], system["step"], system["auto_sync"]) == ("", 100, True)
    assert system["exchange_rate"] == "1" and system["has_access_key"] is False


def test_numeric_exchange_rate_converted_exactly(client, admin):
    system = client.post("/v1/systems", json=body(exchange_rate=1.1), headers=admin).get_json()
    assert system["exchange_rate"] == "1.1"
    system = client.post("/v1/systems", json=body(name="red", exchange_rate=2), headers=admin)
    assert system.get_json()["exchange_rate"] == "2"


def test_list_get_patch_delete(client, admin, redis_client, caplog):
    caplog.set_level(logging.INFO, logger="coordinator.systems.api")
    client.post("/v1/systems", json=body(), headers=admin)
    client.post("/v1/systems", json=body(name="red", access_key=None), headers=admin)
    listed = client.get("/v1/systems", headers=admin)
    assert [s["name"] for s in listed.get_json()] == ["blue", "red"]
    assert_no_plaintext(listed)

    patched = client.patch("/v1/systems/red", headers=admin, json={
        "description": "US brand", "step": 250, "auto_sync": False, "exchange_rate": "0.9231",
        "api_secret": "new-" + SECRET, "access_key": ACCESS_KEY})
    assert patched.status_code == 200, patched.get_json()
    assert "new-" + SECRET not in patched.get_data(as_text=True)
    assert_no_plaintext(patched)
    # secrets are never logged: the change is logged by the names of its fields
    logged = [r.getMessage() for r in caplog.records if r.name == "coordinator.systems.api"]
    assert logged[-1] == ("system updated: red (access_key, api_secret, auto_sync, "
                          "description, exchange_rate, step)")
    assert SECRET not in caplog.text and ACCESS_KEY not in caplog.text
    red = client.get("/v1/systems/red", headers=admin).get_json()
    assert (red["description"], red["step"], red["auto_sync"], red["exchange_rate"]) == (
        "US brand", 250, False, "0.9231")
    assert red["has_access_key"] is True

    cleared = client.patch("/v1/systems/red", json={"access_key": None}, headers=admin)
    assert cleared.get_json()["has_access_key"] is False

    assert client.delete("/v1/systems/red", headers=admin).status_code == 204
    assert_error(client.get("/v1/systems/red", headers=admin), 404)
    assert [s["name"] for s in client.get("/v1/systems", headers=admin).get_json()] == ["blue"]
    assert redis_client.smembers(keys.SYSTEMS) == {"blue"}


def test_empty_patch_changes_nothing(client, admin, redis_client):
    client.post("/v1/systems", json=body(), headers=admin)
    before = snapshot(redis_client)
    response = client.patch("/v1/systems/blue", json={}, headers=admin)
    assert response.status_code == 200
    assert snapshot(redis_client) == before


def test_duplicate_name_409_changes_nothing(client, admin, redis_client):
    client.post("/v1/systems", json=body(), headers=admin)
    before = snapshot(redis_client)
    assert_error(client.post("/v1/systems", json=body(api_secret="other"), headers=admin), 409)
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("call", [
    ("get", "/v1/systems/nope"), ("patch", "/v1/systems/nope"), ("delete", "/v1/systems/nope"),
    ("post", "/v1/systems/nope/agent-token"), ("get", "/v1/systems/..%2Fx"),
    ("get", "/v1/systems/BLUE"), ("delete", "/v1/systems/%7Bsys:a%7D"),
])
def test_unknown_system_404(client, admin, call):
    method, path = call
    kwargs = {"json": {"step": 5}} if method == "patch" else {}
    assert_error(getattr(client, method)(path, headers=admin, **kwargs), 404)


def test_secrets_never_in_raw_redis(client, admin, redis_client, secret_key):
    client.post("/v1/systems", json=body(), headers=admin)
    client.patch("/v1/systems/blue", json={"api_secret": SECRET + "-2"}, headers=admin)
    dump = raw_dump(redis_client)
    assert SECRET not in dump and ACCESS_KEY not in dump
    record = redis_client.hgetall(keys.system("blue"))
    fernet = Fernet(secret_key)
    assert fernet.decrypt(record["api_secret_enc"].encode()).decode() == SECRET + "-2"
    assert fernet.decrypt(record["access_key_enc"].encode()).decode() == ACCESS_KEY


def test_rotated_agent_token_replaces_old_at_once(client, admin, redis_client):
    old = client.post("/v1/systems", json=body(), headers=admin).get_json()["agent_token"]
    rotated = client.post("/v1/systems/blue/agent-token", headers=admin)
    assert rotated.status_code == 200
    assert_no_plaintext(rotated)
    new = rotated.get_json()["agent_token"]
    assert new != old
    assert auth.authenticate(redis_client, f"Bearer {new}", None).system == "blue"
    with pytest.raises(auth.AuthError):
        auth.authenticate(redis_client, f"Bearer {old}", None)
    # Exactly one agent token exists for the system.
    records = [json.loads(v) for v in redis_client.hgetall(keys.TOKENS).values()]
    assert sum(1 for r in records if r.get("system") == "blue") == 1


def test_agent_token_scopes_to_its_system(client, app, admin):
    token = client.post("/v1/systems", json=body(), headers=admin).get_json()["agent_token"]
    with app.test_request_context(headers={"Authorization": f"Bearer {token}"}):
        assert auth.require_system_access("blue").system == "blue"
        with pytest.raises(auth.Forbidden):
            auth.require_system_access("red")


def test_delete_revokes_token_and_keeps_ledger(client, admin, redis_client):
    token = client.post("/v1/systems", json=body(), headers=admin).get_json()["agent_token"]
    # Stand-ins for numbering and forecaster data written by other modules.
    redis_client.hset("{seq:invoice}:ledger:2026", "51", json.dumps({"system": "blue"}))
    redis_client.hset(keys.system_tag("blue") + ":invoices", "1", "{}")
    redis_client.hset(keys.system_tag("blue-2") + ":invoices", "1", "{}")
    assert client.delete("/v1/systems/blue", headers=admin).status_code == 204
    response = client.get("/v1/systems", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401)
    assert redis_client.hget("{seq:invoice}:ledger:2026", "51")
    assert not redis_client.exists(keys.system_tag("blue") + ":invoices")
    assert redis_client.exists(keys.system_tag("blue-2") + ":invoices")
    assert auth.digest(token) not in redis_client.hgetall(keys.TOKENS)


ENDPOINTS = [
    ("get", "/v1/systems"), ("post", "/v1/systems"), ("get", "/v1/systems/blue"),
    ("patch", "/v1/systems/blue"), ("delete", "/v1/systems/blue"),
    ("post", "/v1/systems/blue/agent-token"),
]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_agent_token_gets_403_everywhere(client, admin, redis_client, method, path):
    token = client.post("/v1/systems", json=body(), headers=admin).get_json()["agent_token"]
    before = snapshot(redis_client)
    kwargs = {"json": body(name="x")} if method == "post" and path == "/v1/systems" else {}
    if method == "patch":
        kwargs = {"json": {"step": 5}}
    response = getattr(client, method)(path, headers={"Authorization": f"Bearer {token}"},
                                       **kwargs)
    assert_error(response, 403)
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("method,path", ENDPOINTS)
@pytest.mark.parametrize("header", [None, "Bearer isa_not-a-token", "Basic YTpi"])
def test_no_or_bad_token_401(client, redis_client, method, path, header):
    headers = {"Authorization": header} if header else {}
    before = snapshot(redis_client)
    kwargs = {"json": body()} if method in ("post", "patch") and path == "/v1/systems" else {}
    response = getattr(client, method)(path, headers=headers, **kwargs)
    payload = assert_error(response, 401)
    assert "WWW-Authenticate" in response.headers and payload["message"]
    assert snapshot(redis_client) == before


BAD_CREATE = [
    ({"name": "../x"}, "name"), ({"name": "a/b"}, "name"), ({"name": "Blue"}, "name"),
    ({"name": ""}, "name"), ({"name": "-x"}, "name"), ({"name": "x" * 64}, "name"),
    ({"name": "blue\n"}, "name"), ({"name": "{sys:x}"}, "name"), ({"name": "a b"}, "name"),
    ({"name": 5}, "name"), ({"name": None}, "name"),
    ({"description": "x" * 501}, "description"), ({"description": "a\x00b"}, "description"),
    ({"url": "ftp://billing.blue.example/includes/api.php"}, "url"),
    ({"url": "https://user:pw@billing.blue.example/includes/api.php"}, "url"),
    ({"url": "https://user@billing.blue.example/includes/api.php"}, "url"),
    ({"url": "https://billing.blue.example/"}, "url"),
    ({"url": "https://billing.blue.example/includes/api.php?action=DeleteClient"}, "url"),
    ({"url": "https://billing.blue.example/includes/api.php#x"}, "url"),
    ({"url": "https://billing.blue.example:99999/includes/api.php"}, "url"),
    ({"url": "https:///includes/api.php"}, "url"), ({"url": "not a url"}, "url"),
    ({"url": "https://bad_host!.example/includes/api.php"}, "url"),
    ({"url": "https://billing.blue.example/includes/api.php" + "x" * 2100}, "url"),
    ({"api_identifier": ""}, "api_identifier"), ({"api_identifier": "x" * 513}, "api_identifier"),
    ({"api_identifier": None}, "api_identifier"),
    ({"api_secret": ""}, "api_secret"), ({"api_secret": "x" * 513}, "api_secret"),
    ({"api_secret": 12345}, "api_secret"), ({"api_secret": "a\nb"}, "api_secret"),
    ({"access_key": ""}, "access_key"),
    ({"step": 0}, "step"), ({"step": 1001}, "step"), ({"step": -1}, "step"),
    ({"step": "100"}, "step"), ({"step": 1.5}, "step"), ({"step": True}, "step"),
    ({"auto_sync": "yes"}, "auto_sync"), ({"auto_sync": 1}, "auto_sync"),
    ({"auto_sync": None}, "auto_sync"),
    ({"exchange_rate": "0"}, "exchange_rate"), ({"exchange_rate": "0.000"}, "exchange_rate"),
    ({"exchange_rate": "-1.2"}, "exchange_rate"), ({"exchange_rate": -1}, "exchange_rate"),
    ({"exchange_rate": 0}, "exchange_rate"), ({"exchange_rate": "abc"}, "exchange_rate"),
    ({"exchange_rate": "NaN"}, "exchange_rate"), ({"exchange_rate": "Infinity"}, "exchange_rate"),
    ({"exchange_rate": "1e3"}, "exchange_rate"), ({"exchange_rate": 1e-7}, "exchange_rate"),
    ({"exchange_rate": "1.12345678901"}, "exchange_rate"),
    ({"exchange_rate": "1234567890123"}, "exchange_rate"),
    ({"exchange_rate": " 1.0"}, "exchange_rate"), ({"exchange_rate": True}, "exchange_rate"),
    ({"exchange_rate": None}, "exchange_rate"),
    ({"api_secret_typo": "x"}, "api_secret_typo"), ({"agent_token": "isg_x"}, "agent_token"),
    ({"has_api_secret": True}, "has_api_secret"),
]


@pytest.mark.parametrize("override,field", BAD_CREATE)
def test_bad_create_is_422_with_field_errors_and_changes_nothing(
    client, admin, redis_client, override, field
):
    client.post("/v1/systems", json=body(name="existing"), headers=admin)
    before = snapshot(redis_client)
    response = client.post("/v1/systems", json=body(**override), headers=admin)
    payload = assert_error(response, 422)
    assert field in payload["errors"]["json"], payload
    assert SECRET not in response.get_data(as_text=True)
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("missing", ["name", "url", "api_identifier", "api_secret"])
def test_required_fields(client, admin, redis_client, missing):
    data = body()
    del data[missing]
    before = snapshot(redis_client)
    payload = assert_error(client.post("/v1/systems", json=data, headers=admin), 422)
    assert missing in payload["errors"]["json"]
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("payload", ["not json", "[1, 2]", "null", '"blue"'])
def test_non_object_bodies(client, admin, redis_client, payload):
    before = snapshot(redis_client)
    response = client.post("/v1/systems", data=payload, headers=admin,
                           content_type="application/json")
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code)
    assert snapshot(redis_client) == before


BAD_PATCH = [
    ({"name": "red"}, "name"), ({"step": 0}, "step"), ({"exchange_rate": "-1"}, "exchange_rate"),
    ({"api_secret": None}, "api_secret"), ({"api_secret": ""}, "api_secret"),
    ({"url": "https://a:b@billing.blue.example/includes/api.php"}, "url"),
    ({"auto_sync": "false"}, "auto_sync"), ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize("changes,field", BAD_PATCH)
def test_bad_patch_changes_nothing(client, admin, redis_client, changes, field):
    client.post("/v1/systems", json=body(), headers=admin)
    before = snapshot(redis_client)
    payload = assert_error(client.patch("/v1/systems/blue", json=changes, headers=admin), 422)
    assert field in payload["errors"]["json"], payload
    assert snapshot(redis_client) == before


UNSAFE_URLS = [
    "http://billing.blue.example/includes/api.php",
    "https://127.0.0.1/includes/api.php", "https://127.1/includes/api.php",
    "https://2130706433/includes/api.php", "https://0x7f000001/includes/api.php",
    "https://169.254.169.254/includes/api.php", "https://[::1]/includes/api.php",
    "https://[::ffff:127.0.0.1]/includes/api.php", "https://[fe80::1]/includes/api.php",
    "https://[::]/includes/api.php", "https://0.0.0.0/includes/api.php",
    "https://10.1.2.3/includes/api.php", "https://192.168.1.10/includes/api.php",
    "https://172.16.0.1/includes/api.php", "https://100.64.0.1/includes/api.php",
    "https://224.0.0.1/includes/api.php", "https://[ff02::1]/includes/api.php",
    "https://[fd00::1]/includes/api.php", "https://[2002:7f00:1::]/includes/api.php",
    "https://localhost/includes/api.php", "https://LOCALHOST./includes/api.php",
    "https://app.localhost/includes/api.php", "https://metadata.google.internal/includes/api.php",
    "https://billing.corp.internal/includes/api.php", "https://printer.local/includes/api.php",
    "https://billing/includes/api.php",
    "https://rebind.example/includes/api.php", "https://mixed.example/includes/api.php",
    "https://metadata-alias.example/includes/api.php",
]


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_unsafe_urls_refused_without_allow_flags(strict_client, admin, redis_client, url):
    before = snapshot(redis_client)
    payload = assert_error(strict_client.post("/v1/systems", json=body(url=url), headers=admin),
                           422)
    assert "url" in payload["errors"]["json"], payload
    assert snapshot(redis_client) == before


def test_unsafe_url_refused_on_patch_too(strict_client, admin, redis_client):
    assert strict_client.post("/v1/systems", json=body(), headers=admin).status_code == 201
    before = snapshot(redis_client)
    for url in ("https://169.254.169.254/includes/api.php",
                "http://billing.blue.example/includes/api.php"):
        response = strict_client.patch("/v1/systems/blue", json={"url": url}, headers=admin)
        assert_error(response, 422)
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("url", [
    URL, "https://billing.red.example:8443/whmcs/includes/api.php",
    "https://93.184.216.34/includes/api.php", "https://unresolvable.example/includes/api.php",
])
def test_public_https_urls_accepted(strict_client, admin, url):
    response = strict_client.post("/v1/systems", json=body(url=url), headers=admin)
    assert response.status_code == 201, response.get_json()


def test_allow_flags_accept_lab_urls(client, admin):
    # The default test config sets both ALLOW_* flags, as a lab or the demo would.
    for index, url in enumerate(["http://127.0.0.1:8081/includes/api.php",
                                 "http://localhost/includes/api.php"]):
        response = client.post("/v1/systems", json=body(name=f"lab{index}", url=url),
                               headers=admin)
        assert response.status_code == 201, response.get_json()


def test_no_secret_keys_is_503_and_changes_nothing(app_config, redis_client, admin):
    app = create_app({**app_config, "SECRET_KEYS": None})
    client = app.test_client()
    before = snapshot(redis_client)
    payload = assert_error(client.post("/v1/systems", json=body(), headers=admin), 503)
    assert "INVOICE_SYNC_SECRET_KEYS" in payload["message"]
    assert snapshot(redis_client) == before


def test_malformed_secret_key_is_503_without_echoing_it(app_config, redis_client, admin):
    app = create_app({**app_config, "SECRET_KEYS": "not-a-fernet-key-0123456789"})
    response = app.test_client().post("/v1/systems", json=body(), headers=admin)
    payload = assert_error(response, 503)
    assert "#1" in payload["message"]
    assert "not-a-fernet-key-0123456789" not in response.get_data(as_text=True)


def test_openapi_documents_systems(client):
    spec = client.get("/openapi.json").get_json()
    assert {"/v1/systems", "/v1/systems/{name}", "/v1/systems/{name}/agent-token"} <= set(
        spec["paths"])
    created = spec["components"]["schemas"]["SystemWithToken"]["properties"]
    assert "agent_token" in created and "api_secret" not in created
    # The request bodies document what they enforce: limits, the slug pattern, write-only
    # credentials, and examples the API itself accepts.
    slug = "^[a-z0-9][a-z0-9_-]{0,62}$"
    for schema in ("SystemCreate", "SystemPatch"):
        fields = spec["components"]["schemas"][schema]["properties"]
        for name in ("api_identifier", "api_secret", "access_key"):
            field = fields[name]
            assert (field["writeOnly"], field["minLength"], field["maxLength"]) == (True, 1, 512)
        assert fields["description"]["maxLength"] == 500
        url = fields["url"]
        assert url["maxLength"] == 2048 and url["description"]
        check_url_shape(url["example"])  # raises UnsafeURL if the example would be refused
        series = fields["series"]
        assert series["pattern"] == slug and series["description"]
        assert re.fullmatch(slug, series["example"])
        assert (fields["step"]["minimum"], fields["step"]["maximum"]) == (1, 1000)
        minutes = fields["central_poll_minutes"]
        assert (minutes["minimum"], minutes["maximum"]) == (1, 1440)
    create = spec["components"]["schemas"]["SystemCreate"]
    assert sorted(create["required"]) == ["api_identifier", "api_secret", "name", "url"]
    assert {name: field["default"] for name, field in create["properties"].items()
            if "default" in field} == {
        "description": "", "access_key": None, "step": 100, "auto_sync": True,
        "exchange_rate": "1", "series": "default", "central_poll": False,
        "central_poll_minutes": 5, "number_on": "paid"}


def test_each_refused_field_says_what_is_wrong_all_at_once(client, admin, redis_client):
    """The 422 names every bad field with what to change (never the value sent)."""
    before = snapshot(redis_client)
    payload = assert_error(client.post("/v1/systems", headers=admin, json=body(
        description="EU\x00brand", api_identifier=" ident-blue", api_secret="whmcs\nsecret",
        series="Blue Brand", url="ftp://billing.blue.example/includes/api.php", step=0)), 422)
    assert payload["errors"]["json"] == {
        "description": ["Must not contain control characters."],
        "api_identifier": ["Must not start or end with whitespace."],
        "api_secret": ["Must not contain control characters."],
        "series": ["Must be 1 to 63 characters: lowercase letters, digits, '-' and '_', "
                   "starting with a letter or digit."],
        "url": ["Must be an https:// URL."],
        "step": ["Must be greater than or equal to 1 and less than or equal to 1000."],
    }
    assert snapshot(redis_client) == before
