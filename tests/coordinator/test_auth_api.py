"""/v1/tokens over HTTP, and the role of every route for admin, auditor, agent and nobody."""

from __future__ import annotations

import json
import re

import pytest

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.auth import tokens
from tests.coordinator import redis_counting
from tests.support import snapshot

pytestmark = pytest.mark.integration

ADMIN, AUDITOR, AGENT = auth.ADMIN, auth.AUDITOR, auth.AGENT
READERS = {ADMIN, AUDITOR}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

ROLE_TABLE: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/livez"): None, ("GET", "/readyz"): None, ("GET", "/healthz"): None,
    ("GET", "/metrics"): None, ("GET", "/openapi.json"): None,
    ("GET", "/static/<path:filename>"): None,
    ("GET", "/v1/whoami"): {ADMIN, AUDITOR, AGENT},
    ("POST", "/v1/allocations"): {AGENT},
    ("POST", "/v1/allocation-batches"): {AGENT},
    ("GET", "/v1/allocations/<path:allocation_id>"): {ADMIN, AUDITOR, AGENT},
    ("POST", "/v1/allocations/<path:allocation_id>/confirm"): {AGENT},
    ("POST", "/v1/allocations/<path:allocation_id>/void"): {ADMIN, AGENT},
    ("POST", "/v1/allocations/<path:allocation_id>/reissue"): {ADMIN},
    ("POST", "/v1/series/<string:series>/sequences/<string:name>/ledger/checkpoints"): {ADMIN},
    ("GET", "/v1/sequences"): READERS,
    ("GET", "/v1/sequences/<string:name>"): READERS,
    ("PATCH", "/v1/sequences/<string:name>"): {ADMIN},
    ("GET", "/v1/sequences/<string:name>/audit"): READERS,
    ("GET", "/v1/sequences/<string:name>/gaps"): READERS,
    ("GET", "/v1/sequences/<string:name>/ledger"): READERS,
    ("GET", "/v1/series"): READERS,
    ("POST", "/v1/series"): {ADMIN},
    ("GET", "/v1/series/<string:series>"): READERS,
    ("PATCH", "/v1/series/<string:series>"): {ADMIN},
    ("DELETE", "/v1/series/<string:series>"): {ADMIN},
    ("GET", "/v1/series/<string:series>/sequences"): READERS,
    ("GET", "/v1/series/<string:series>/sequences/<string:name>"): READERS,
    ("PATCH", "/v1/series/<string:series>/sequences/<string:name>"): {ADMIN},
    ("GET", "/v1/series/<string:series>/sequences/<string:name>/audit"): READERS,
    ("GET", "/v1/series/<string:series>/sequences/<string:name>/gaps"): READERS,
    ("GET", "/v1/series/<string:series>/sequences/<string:name>/ledger"): READERS,
    ("GET", "/v1/series/<string:series>/sequences/<string:name>/ledger/verify"): READERS,
    ("GET", "/v1/series/<string:series>/sequences/<string:name>/ledger/export"): READERS,
    ("GET", "/v1/systems"): {ADMIN},
    ("POST", "/v1/systems"): {ADMIN},
    ("GET", "/v1/systems/<name>"): {ADMIN},
    ("PATCH", "/v1/systems/<name>"): {ADMIN},
    ("DELETE", "/v1/systems/<name>"): {ADMIN},
    ("POST", "/v1/systems/<name>/agent-token"): {ADMIN},
    ("GET", "/v1/systems/<name>/syncs"): {ADMIN},
    ("POST", "/v1/systems/<name>/syncs"): {ADMIN},
    ("GET", "/v1/syncs/<sync_id>"): {ADMIN},
    ("GET", "/v1/reports/revenue"): READERS,
    ("GET", "/v1/reports/receivables"): READERS,
    ("GET", "/v1/reports/forecast"): READERS,
    ("GET", "/v1/reports/reconciliation"): READERS,
    ("GET", "/v1/warnings"): READERS,
    ("POST", "/v1/warnings/<path:warning_id>/ack"): {ADMIN},
    ("GET", "/v1/tokens"): {ADMIN},
    ("POST", "/v1/tokens"): {ADMIN},
    ("DELETE", "/v1/tokens/<string:token_id>"): {ADMIN},
    ("GET", "/v1/tokens/audit"): READERS,
}
"""Who may call what (None: no token needed). docs/TOKENS.md shows the same table."""


def routes(app) -> dict[tuple[str, str], tuple[str, ...] | None]:
    """Every (method, rule) the app serves, with the roles its view requires."""
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/ui/"):
            # The dashboard logs in with a session, not a bearer token: its own tests hold
            # every /ui/ route to a login, and every form post to admins (tests/coordinator/ui).
            continue
        view = app.view_functions[rule.endpoint]
        view_class = getattr(view, "view_class", None)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            handler = getattr(view_class, method.lower(), None) if view_class else view
            found[(method, rule.rule)] = getattr(handler, "_invoice_sync_auth", None)
    return found


def concrete(rule: str) -> str:
    """A path that matches ``rule`` (names that exist nowhere: a 404 is a fine answer)."""
    values = {"allocation_id": "invoice:2026:1", "name": "invoice", "sync_id": "s-1",
              "series": "default",
              "warning_id": "w-1", "token_id": "tok_0000000000000000", "filename": "x"}
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], rule)


@pytest.fixture
def auditor_token(redis_client) -> str:
    return tokens.create_token(redis_client, AUDITOR, "audit firm", "cli")[1]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- the role table ------------------------------------------------------------------------


def test_no_route_lets_an_auditor_change_anything(app):
    """Holds for every route, including ones added after this test was written."""
    for (method, rule), kinds in routes(app).items():
        if rule.startswith("/v1/"):
            assert kinds, f"{method} {rule} has no auth.require(...)"
        if method not in SAFE_METHODS:
            assert AUDITOR not in (kinds or ()), f"auditor may {method} {rule}"


def test_every_route_has_the_roles_of_the_table(app):
    served = routes(app)
    new = sorted(set(served) - set(ROLE_TABLE))
    assert not new, (f"routes not in ROLE_TABLE: {new}; add them (and to docs/TOKENS.md) "
                     "with the roles they must have")
    assert not sorted(set(ROLE_TABLE) - set(served)), "ROLE_TABLE lists routes that are gone"
    wrong = {route: (served[route], expected) for route, expected in ROLE_TABLE.items()
             if set(served[route] or ()) != (expected or set())}
    assert not wrong, wrong


@pytest.mark.parametrize("route", sorted(ROLE_TABLE), ids=" ".join)
def test_each_role_is_let_in_or_refused_as_the_table_says(app, redis_client, admin_token,
                                                          auditor_token, agent, route):
    method, rule = route
    expected = ROLE_TABLE[route]
    client = app.test_client()
    path = concrete(rule)
    callers = {ADMIN: bearer(admin_token), AUDITOR: bearer(auditor_token),
               AGENT: agent("blue"), "nobody": {}}
    for role, headers in callers.items():
        before = snapshot(redis_client)
        answer = client.open(path, method=method, headers=headers, json={})
        if expected is None:
            assert answer.status_code not in (401, 403), (role, method, path)
        elif role == "nobody":
            assert answer.status_code == 401, (method, path, answer.status_code)
        elif role not in expected:
            assert answer.status_code == 403, (role, method, path, answer.status_code)
            assert answer.get_json()["code"] == 403
            assert snapshot(redis_client) == before, f"a refused {role} changed data"
        else:
            assert answer.status_code not in (401, 403), (role, method, path, answer.get_json())


def test_auditor_reads_numbers_reports_and_warnings(client, admin, auditor_token, agent):
    taken = client.post("/v1/allocations", headers=agent("blue"),
                        json={"document": "invoice", "reference": "r-1", "date": "2026-11-21"})
    assert taken.status_code == 201
    reader = bearer(auditor_token)
    for path in ("/v1/sequences", "/v1/sequences/invoice", "/v1/sequences/invoice/audit",
                 "/v1/sequences/invoice/ledger?period=2026", "/v1/sequences/invoice/gaps",
                 f"/v1/allocations/{taken.get_json()['id']}", "/v1/reports/revenue",
                 "/v1/reports/receivables", "/v1/reports/forecast", "/v1/warnings",
                 "/v1/tokens/audit"):
        answer = client.get(path, headers=reader)
        assert answer.status_code == 200, (path, answer.get_json())
    ledger = client.get("/v1/sequences/invoice/ledger?period=2026", headers=reader).get_json()
    assert [e["reference"] for e in ledger["entries"]] == ["r-1"]
    assert client.get("/v1/whoami", headers=reader).get_json() == {"kind": "auditor",
                                                                    "system": None}


# --- /v1/tokens ----------------------------------------------------------------------------


def test_create_list_revoke_over_http(client, admin, redis_client):
    created = client.post("/v1/tokens", headers=admin,
                          json={"role": "auditor", "label": "Ms Audit"})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    token, token_id = body["token"], body["id"]
    assert token.startswith("isr_") and body["role"] == "auditor"
    assert body["created_by"].startswith("admin:tok_")
    listed = client.get("/v1/tokens", headers=admin)
    assert listed.status_code == 200
    text = listed.get_data(as_text=True)
    assert token not in text and auth.digest(token) not in text
    entry = next(t for t in listed.get_json() if t["id"] == token_id)
    assert entry["label"] == "Ms Audit" and "token" not in entry
    assert client.get("/v1/sequences", headers=bearer(token)).status_code == 200

    revoked = client.delete(f"/v1/tokens/{token_id}", headers=admin)
    assert revoked.status_code == 200 and revoked.get_json()["id"] == token_id
    assert client.get("/v1/sequences", headers=bearer(token)).status_code == 401
    again = client.delete(f"/v1/tokens/{token_id}", headers=admin)
    assert again.status_code == 404 and again.get_json()["code"] == 404
    trail = client.get("/v1/tokens/audit", headers=admin).get_json()
    assert [(e["action"], e["token"]) for e in trail][-2:] == [("created", token_id),
                                                               ("revoked", token_id)]
    # each record names the admin token that made the change; ?limit= answers the latest only
    assert [e["by"] for e in trail][-2:] == [body["created_by"]] * 2
    assert client.get("/v1/tokens/audit?limit=1", headers=admin).get_json() == trail[-1:]


def test_the_configured_admin_token_is_not_revoked_over_http(app_config, redis_client, admin):
    configured = auth.new_token(auth.ADMIN)
    client = create_app({**app_config, "ADMIN_TOKEN": configured}).test_client()
    before = snapshot(redis_client)
    answer = client.delete(f"/v1/tokens/{auth.token_id(auth.digest(configured))}", headers=admin)
    assert (answer.status_code, answer.get_json()["message"]) == (
        409, "This admin token is set by INVOICE_SYNC_ADMIN_TOKEN: change or unset the variable "
             "and restart the coordinator to revoke it")
    assert snapshot(redis_client) == before


def test_admin_created_over_http_is_an_admin(client, admin):
    body = client.post("/v1/tokens", headers=admin,
                       json={"role": "admin", "label": "second admin"}).get_json()
    assert client.get("/v1/systems", headers=bearer(body["token"])).status_code == 200


@pytest.mark.parametrize("payload, field", [
    ({"role": "agent", "label": "x"}, "role"), ({"role": "root", "label": "x"}, "role"),
    ({"label": "x"}, "role"), ({"role": "auditor"}, "label"),
    ({"role": "auditor", "label": ""}, "label"), ({"role": "auditor", "label": "x" * 201}, "label"),
    ({"role": "auditor", "label": "a\u0000b"}, "label"),
    ({"role": "auditor", "label": "x", "token": "isa_mine"}, "token"),
])
def test_bad_create_is_422_and_changes_nothing(client, admin, redis_client, payload, field):
    before = snapshot(redis_client)
    answer = client.post("/v1/tokens", headers=admin, json=payload)
    assert answer.status_code == 422, answer.get_json()
    body = answer.get_json()
    assert set(body) == {"code", "status", "message", "errors"} and body["code"] == 422
    assert field in body["errors"]["json"]
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("token_id", ["tok_zz", "%C3%A9t%C3%A9", "%F3%81%AD%AB", "tok_" + "0" * 17,
                                      "TOK_0123456789ABCDEF", "%00"])
def test_delete_of_an_id_of_any_shape_is_404(client, admin, redis_client, token_id):
    """Regression: a non-ASCII id reached hmac.compare_digest, which raised (500)."""
    tokens.create_token(redis_client, AUDITOR, "present", "cli")  # something to compare with
    before = snapshot(redis_client)
    answer = client.delete(f"/v1/tokens/{token_id}", headers=admin)
    assert answer.status_code == 404, answer.get_data(as_text=True)
    assert answer.get_json()["code"] == 404
    assert snapshot(redis_client) == before


def test_agent_token_delete_is_409_and_keeps_it(client, admin, agent):
    headers = agent("blue")
    token = headers["Authorization"].removeprefix("Bearer ")
    token_id = auth.token_id(auth.digest(token))
    listed = client.get("/v1/tokens", headers=admin).get_json()
    assert {"id": token_id, "role": "agent", "system": "blue"}.items() <= next(
        t for t in listed if t["id"] == token_id).items()
    answer = client.delete(f"/v1/tokens/{token_id}", headers=admin)
    assert answer.status_code == 409
    assert "agent-token" in answer.get_json()["message"]
    assert client.get("/v1/whoami", headers=headers).status_code == 200


def test_audit_records_name_the_token_id(client, admin, admin_token, agent):
    """Settings changes name the admin by the id GET /v1/tokens lists, not by a hash prefix."""
    answer = client.patch("/v1/sequences/invoice", headers=admin, json={"padding": 5})
    assert answer.status_code == 200
    records = client.get("/v1/sequences/invoice/audit", headers=admin).get_json()["records"]
    assert records[-1]["by"] == f"admin:{auth.token_id(auth.digest(admin_token))}"


def test_revocation_takes_effect_at_once_in_every_app_instance(app_config, redis_client, admin):
    # Two apps stand for two worker processes on one Redis: neither may cache a token.
    first, second = (create_app(app_config).test_client() for _ in range(2))
    body = first.post("/v1/tokens", headers=admin,
                      json={"role": "auditor", "label": "x"}).get_json()
    reader = bearer(body["token"])
    assert first.get("/v1/warnings", headers=reader).status_code == 200
    assert second.get("/v1/warnings", headers=reader).status_code == 200
    assert second.delete(f"/v1/tokens/{body['id']}", headers=admin).status_code == 200
    assert first.get("/v1/warnings", headers=reader).status_code == 401
    assert second.get("/v1/warnings", headers=reader).status_code == 401


def test_openapi_documents_the_token_routes(client):
    spec = client.get("/openapi.json").get_json()
    assert {"get", "post"} <= set(spec["paths"]["/v1/tokens"])
    assert "delete" in spec["paths"]["/v1/tokens/{token_id}"]
    schemas = json.dumps(spec["components"]["schemas"])
    assert "TokenCreate" in schemas


def test_token_keys_share_one_hash_slot():
    tagged = [keys.TOKENS, keys.TOKEN_AUDIT, keys.TOKENS_REVOKED, keys.TOKENS_LAST_USED,
              keys.rate_limit("ab" * 32, 7), keys.rate_auth_failures(7)]
    assert all(key.startswith("{auth}:") for key in tagged)


def test_package_surface_other_code_relies_on(redis_client):
    """``from coordinator import auth``: the names views, the dashboard and OpenAPI use."""
    for name in ("require", "ADMIN", "AUDITOR", "AGENT", "Principal", "authenticate",
                 "current_principal", "require_system_access", "digest", "new_token",
                 "register_admin_token", "agent_token_record"):
        assert hasattr(auth, name), name
    assert (auth.ADMIN, auth.AUDITOR, auth.AGENT) == ("admin", "auditor", "agent")
    assert all(hasattr(auth, name) for name in auth.__all__)

    @auth.require(auth.ADMIN, auth.AUDITOR)
    def view():
        return "ok"

    assert view._invoice_sync_auth == ("admin", "auditor")
    _, token = tokens.create_token(redis_client, auth.AUDITOR, "dashboard login", "cli")
    assert auth.authenticate(redis_client, f"Bearer {token}", None).kind == "auditor"
    assert auth.authenticate(redis_client, "Bearer isa_env", "isa_env").kind == "admin"


def test_an_agent_reads_its_own_systems_allocations_and_no_other(client, agent, auditor_token):
    blue, red = agent("blue"), agent("red")
    body = {"document": "invoice", "date": "2026-11-21"}
    own = client.post("/v1/allocations", headers=blue, json={**body, "reference": "b-1"})
    other = client.post("/v1/allocations", headers=red, json={**body, "reference": "r-1"})
    assert (own.status_code, other.status_code) == (201, 201)
    own_id, other_id = own.get_json()["id"], other.get_json()["id"]
    assert client.get(f"/v1/allocations/{own_id}", headers=blue).get_json()["reference"] == "b-1"
    refused = client.get(f"/v1/allocations/{other_id}", headers=blue)
    assert (refused.status_code, refused.get_json()["message"]) == (
        403, "This agent token belongs to another system")
    reader = bearer(auditor_token)
    assert client.get(f"/v1/allocations/{other_id}", headers=reader).status_code == 200


def test_an_unlimited_role_is_authenticated_from_the_process_cache(app_config, redis_client,
                                                                   admin_token):
    """TOKEN_CACHE (on by default): a token whose role has no rate limit costs no round trip
    after its first request; the cache is kept true by Redis (tests/coordinator/
    test_auth_cache.py)."""
    client = create_app({**app_config, "RATE_LIMIT_ADMIN": 0}).test_client()
    assert client.get("/v1/whoami", headers=bearer(admin_token)).status_code == 200
    sent = redis_counting.top_level(
        redis_client, lambda: client.get("/v1/whoami", headers=bearer(admin_token)))
    assert sent == []
