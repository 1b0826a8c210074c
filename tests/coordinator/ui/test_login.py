"""Dashboard logins: roles, the session cookie, revocation, CSRF, the auditor's read-only view."""

from __future__ import annotations

import re

import pytest

from coordinator import auth, keys
from tests.coordinator.ui.conftest import BASE
from tests.support import snapshot

pytestmark = pytest.mark.integration

SEQUENCE = "/ui/series/default/sequences/invoice"
READER_PAGES = ["/ui/", "/ui/numbering", "/ui/series/default", SEQUENCE + "/ledger",
                SEQUENCE + "/gaps", SEQUENCE + "/verify", SEQUENCE + "/export?format=csv",
                "/ui/references?reference=1", "/ui/revenue", "/ui/revenue.csv", "/ui/warnings"]
DOWNLOADS = (".csv", "format=csv")
ADMIN_PAGES = ["/ui/systems", "/ui/systems/blue", "/ui/syncs/abc", "/ui/syncs/abc/progress"]
PAGES = READER_PAGES + ["/ui/systems"]
OPEN = {"/ui/login", "/ui/static/<path:filename>"}


def dashboard_routes(app) -> list[tuple[str, str]]:
    """Every (method, rule) under /ui/, including routes added after these tests."""
    return sorted((method, rule.rule) for rule in app.url_map.iter_rules()
                  if rule.rule.startswith("/ui/")
                  for method in rule.methods - {"HEAD", "OPTIONS"})


def concrete(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", "blue", rule)


def test_no_dashboard_route_without_login(app, dashboard, valkey):
    """Holds for every route under /ui/, including ones added after this test was written."""
    routes = dashboard_routes(app)
    assert len(routes) > 15
    dashboard.get("/ui/login")  # the cookie-signing key is made on the first visit
    before = snapshot(valkey.url)
    for method, rule in routes:
        if rule in OPEN:
            continue
        response = dashboard.client.open(concrete(rule), method=method, base_url=BASE)
        assert response.status_code == 303, (method, rule)
        assert response.headers["Location"].startswith("/ui/login?next="), (method, rule)
    assert snapshot(valkey.url) == before


def test_admin_logs_in_and_sees_every_page(as_admin):
    for path in PAGES:
        assert as_admin.get(path).status_code == 200, path


def test_session_cookie_is_secure_httponly_strict_and_holds_no_token(dashboard, admin_token,
                                                                     redis_client):
    response = dashboard.login(admin_token)
    cookie = next(v for k, v in response.headers.items()
                  if k == "Set-Cookie" and v.startswith("__Host-invoice-sync-ui="))
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "secure" in attributes and "httponly" in attributes
    assert "samesite=strict" in attributes and "path=/" in attributes
    assert not any(a.startswith("domain=") for a in attributes)
    assert admin_token not in cookie and auth.digest(admin_token) not in cookie
    # Neither the token nor the session id is stored in clear in Redis.
    dumped = str({k: redis_client.dump(k) for k in redis_client.scan_iter("ui:*")})
    assert admin_token not in dumped


@pytest.mark.parametrize("kind", ["agent", "unknown"])
def test_agent_and_unknown_tokens_cannot_log_in(dashboard, agent, kind):
    token = agent("blue")["Authorization"][7:] if kind == "agent" else "isa_nope"
    response = dashboard.login(token)
    assert response.status_code in (401, 403)
    assert dashboard.get("/ui/").status_code == 303


def test_revoking_the_token_ends_the_login_at_once(as_admin, admin_token, redis_client):
    assert as_admin.get("/ui/").status_code == 200
    redis_client.hdel(keys.TOKENS, auth.digest(admin_token))
    assert as_admin.get("/ui/").status_code == 303


def test_revoking_through_the_token_api_ends_an_auditor_login(as_auditor, auditor_token,
                                                              redis_client):
    assert as_auditor.get("/ui/").status_code == 200
    auth.revoke_token(redis_client, auth.token_id(auth.digest(auditor_token)), "admin:test")
    assert as_auditor.get("/ui/").status_code == 303


def test_logout_ends_the_session_server_side(as_admin, client):
    cookie = client.get_cookie("__Host-invoice-sync-ui", domain="coordinator.test")
    as_admin.post("/ui/logout", page="/ui/")
    assert as_admin.get("/ui/").status_code == 303
    # Replaying the old cookie does not bring the login back.
    client.set_cookie("__Host-invoice-sync-ui", cookie.value, domain="coordinator.test")
    assert as_admin.get("/ui/").status_code == 303


def test_form_without_csrf_token_is_refused_and_changes_nothing(as_admin, redis_client):
    before = redis_client.smembers(keys.SYSTEMS)
    response = as_admin.post("/ui/systems", {"name": "blue", "url": "http://127.0.0.1/includes/api.php",
                                             "api_identifier": "i", "api_secret": "s"},
                             csrf=False)
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert redis_client.smembers(keys.SYSTEMS) == before


def test_login_form_needs_csrf_too(dashboard, admin_token):
    response = dashboard.post("/ui/login", {"token": admin_token}, csrf=False)
    assert response.status_code == 400
    assert dashboard.get("/ui/").status_code == 303


def test_no_dashboard_post_lets_an_auditor_change_anything(app, as_auditor, valkey):
    """Every form post under /ui/ but logging out answers an auditor 403 and changes nothing,
    with a valid CSRF token — for routes added after this test too."""
    posts = [rule for method, rule in dashboard_routes(app)
             if method not in ("GET",) and rule not in ("/ui/login", "/ui/logout")]
    assert len(posts) >= 7
    as_auditor.get("/ui/")  # reading writes the sequences' default settings on first use
    before = {k: v for k, v in snapshot(valkey.url).items() if not k.startswith(b"ui:")}
    for rule in posts:
        assert as_auditor.post(concrete(rule), {"confirm": "blue", "id": "x"},
                               page="/ui/").status_code == 403, rule
    after = {k: v for k, v in snapshot(valkey.url).items() if not k.startswith(b"ui:")}
    assert after == before


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_the_systems_registry_is_for_admins_as_in_the_api(as_auditor, path):
    assert as_auditor.get(path).status_code == 403
    assert 'href="/ui/systems"' not in as_auditor.get("/ui/").get_data(as_text=True)


def test_auditor_sees_everything_without_forms_and_posts_are_refused(as_auditor, redis_client):
    for path in READER_PAGES:
        response = as_auditor.get(path)
        assert response.status_code == 200, path
        body = response.get_data(as_text=True)
        forms = body.count('method="post"')
        # The only form an auditor gets is logging out.
        assert forms == (0 if path.endswith(DOWNLOADS) else 1), path
    before = redis_client.smembers(keys.SYSTEMS)
    for path, data in [("/ui/systems", {"name": "blue"}), ("/ui/warnings/ack", {"id": "x"}),
                       (SEQUENCE, {"next_number": "5"}), ("/ui/numbering", {"name": "acme"}),
                       ("/ui/systems/blue/delete", {"confirm": "blue"})]:
        response = as_auditor.post(path, data, page="/ui/")
        assert response.status_code == 403, path
    assert redis_client.smembers(keys.SYSTEMS) == before


def test_open_redirect_after_login_is_refused(dashboard, admin_token):
    for target in ("https://evil.example/ui/", "//evil.example/ui/", "/v1/systems"):
        response = dashboard.post("/ui/login", {"token": admin_token, "next": target})
        assert response.headers["Location"] == "/ui/", target


def test_api_requests_get_no_session_cookie(client, admin):
    response = client.get("/v1/systems", headers=admin, base_url=BASE)
    assert "Set-Cookie" not in response.headers


def test_a_tampered_cookie_is_no_login(as_admin, client):
    cookie = client.get_cookie("__Host-invoice-sync-ui", domain="coordinator.test")
    payload, _, signature = cookie.value.partition(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    client.set_cookie("__Host-invoice-sync-ui", forged, domain="coordinator.test")
    assert as_admin.get("/ui/").status_code == 303


def test_logging_in_starts_a_new_session(dashboard, admin_token, redis_client):
    dashboard.login(admin_token)
    first = set(redis_client.scan_iter("ui:session:*"))
    dashboard.login(admin_token)  # again, from the same browser
    second = set(redis_client.scan_iter("ui:session:*"))
    assert len(first) == len(second) == 1 and first != second  # the old one was ended


def test_a_form_posted_from_another_site_is_refused(as_admin, redis_client):
    response = as_admin.post("/ui/warnings/ack", {"id": "x"}, page="/ui/warnings",
                             headers={"Referer": "https://evil.example/page"})
    assert response.status_code == 400
    assert "referrer does not match" in response.get_data(as_text=True).lower()
