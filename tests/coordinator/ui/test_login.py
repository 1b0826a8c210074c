"""Dashboard logins: roles, the session cookie, revocation, CSRF, the auditor's read-only view."""

from __future__ import annotations

import pytest

from coordinator import auth, keys
from tests.coordinator.ui.conftest import BASE

pytestmark = pytest.mark.integration

PAGES = ["/ui/", "/ui/systems", "/ui/numbering", "/ui/numbering/invoice/ledger",
         "/ui/numbering/invoice/gaps", "/ui/revenue", "/ui/revenue.csv", "/ui/warnings"]


@pytest.mark.parametrize("path", PAGES + ["/ui/systems/blue", "/ui/syncs/abc"])
def test_no_page_without_login(dashboard, path):
    response = dashboard.get(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/ui/login?next=")


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


def test_auditor_sees_everything_without_forms_and_posts_are_refused(as_auditor, redis_client):
    for path in PAGES:
        response = as_auditor.get(path)
        assert response.status_code == 200, path
        body = response.get_data(as_text=True)
        forms = body.count('method="post"')
        # The only form an auditor gets is logging out.
        assert forms == (0 if path.endswith(".csv") else 1), path
    before = redis_client.smembers(keys.SYSTEMS)
    for path, data in [("/ui/systems", {"name": "blue"}), ("/ui/warnings/ack", {"id": "x"}),
                       ("/ui/numbering/invoice", {"next_number": "5"}),
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
