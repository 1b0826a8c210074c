"""The SSRF guard: URL shape, registration policy, and the check right before each fetch."""

from __future__ import annotations

import threading

import pytest

from coordinator.exceptions import UnsafeURL
from coordinator.systems.urls import (
    UrlPolicy,
    check_fetch_url,
    is_forbidden_address,
    resolve,
    validate_system_url,
)
from tests.coordinator.systems_support import PUBLIC_DNS, URL, FakeResolver

STRICT = {"ALLOW_HTTP_SYSTEM_URLS": False, "ALLOW_PRIVATE_SYSTEM_URLS": False}
LAB = {"ALLOW_HTTP_SYSTEM_URLS": True, "ALLOW_PRIVATE_SYSTEM_URLS": True}


def test_fetch_check_returns_public_addresses():
    resolver = FakeResolver()
    assert check_fetch_url(URL, STRICT, resolver) == ["93.184.216.34"]
    assert resolver.calls == [("billing.blue.example", 443)]
    red = "https://billing.red.example:8443/includes/api.php"
    assert len(check_fetch_url(red, STRICT, resolver)) == 2
    assert resolver.calls[-1] == ("billing.red.example", 8443)


def test_fetch_check_defeats_dns_rebinding():
    resolver = FakeResolver()
    policy = UrlPolicy(resolver=resolver)
    assert validate_system_url(URL, policy) == URL
    assert resolver.calls == [("billing.blue.example", 443)]
    resolver.table["billing.blue.example"] = ["169.254.169.254"]
    with pytest.raises(UnsafeURL) as caught:
        check_fetch_url(URL, STRICT, resolver)
    assert caught.value.errors == {"json": {"url": [caught.value.message]}}


def test_fetch_check_refuses_any_private_answer():
    with pytest.raises(UnsafeURL):
        check_fetch_url("https://mixed.example/includes/api.php", STRICT, FakeResolver())


def test_fetch_check_refuses_unresolvable_names():
    # Registration accepts them (best effort); fetching cannot check them, so it refuses.
    url = "https://gone.example/includes/api.php"
    assert validate_system_url(url, UrlPolicy(resolver=FakeResolver()))
    with pytest.raises(UnsafeURL, match="does not resolve"):
        check_fetch_url(url, STRICT, FakeResolver())


def test_fetch_check_relaxed_in_labs():
    resolver = FakeResolver({"whmcs-lab": ["127.0.0.1"]})
    url = "http://whmcs-lab:8081/includes/api.php"
    assert check_fetch_url(url, LAB, resolver) == ["127.0.0.1"]
    assert check_fetch_url("http://whmcs-lab/includes/api.php", LAB, resolver) == ["127.0.0.1"]
    assert resolver.calls == [("whmcs-lab", 8081), ("whmcs-lab", 80)]  # http's own port
    assert check_fetch_url("http://127.0.0.1:9/includes/api.php", LAB) == ["127.0.0.1"]
    with pytest.raises(UnsafeURL):
        check_fetch_url(url, STRICT, resolver)


def test_fetch_check_refuses_http_without_flag():
    with pytest.raises(UnsafeURL, match="https"):
        check_fetch_url("http://billing.blue.example/includes/api.php",
                        {**STRICT, "ALLOW_PRIVATE_SYSTEM_URLS": True}, FakeResolver())


def test_flags_from_environment_strings():
    policy = UrlPolicy.from_config({"ALLOW_HTTP_SYSTEM_URLS": "false",
                                    "ALLOW_PRIVATE_SYSTEM_URLS": "1"})
    assert (policy.allow_http, policy.allow_private) == (False, True)
    for value, meant in [("TRUE", True), (" Yes ", True), ("on", True), ("true", True),
                         ("yes", True), ("ON", True), ("off", False), ("0", False), ("", False)]:
        assert UrlPolicy.from_config({"ALLOW_HTTP_SYSTEM_URLS": value}).allow_http is meant


def test_slow_resolver_does_not_hold_registration():
    # The resolver answers only when released, and then with a loopback address: had the
    # registration waited for it, it would have refused the URL (or hung until the release).
    called, release, answered = threading.Event(), threading.Event(), threading.Event()

    def stuck(host, port):
        called.set()
        release.wait(60)
        answered.set()
        return ["127.0.0.1"]

    try:
        assert validate_system_url(URL, UrlPolicy(resolver=stuck, resolve_timeout=0.05)) == URL
        assert called.is_set() and not answered.is_set()  # gave up on it, did not wait it out
    finally:
        release.set()
    assert answered.wait(10)


@pytest.mark.parametrize("address,forbidden", [
    ("93.184.216.34", False), ("2606:2800:220:1:248:1893:25c8:1946", False),
    ("127.0.0.1", True), ("10.0.0.1", True), ("169.254.169.254", True), ("fe80::1", True),
    ("::1", True), ("::", True), ("0.0.0.0", True), ("224.0.0.251", True),
    ("::ffff:10.0.0.1", True), ("64:ff9b::a00:1", True), ("2001:0:4136:e378:8000:63bf:f5ff:fffe",
                                                           True),
    ("100.64.0.1", True), ("192.0.2.1", True), ("fe80::1%eth0", True),
    ("4000::1", True),  # reserved by IANA, though Python counts it neither private nor local
    ("2606:2800:220:1::a00:1", False),  # public; only NAT64 (64:ff9b::/96) embeds an IPv4
])
def test_forbidden_addresses(address, forbidden):
    assert is_forbidden_address(address) is forbidden


# Every refusal, with the exact field error the API returns for it (422, errors.json.url): the
# text tells the admin what to change, so it is part of the answer, not a log line.
REFUSALS = [
    (42, "Not a valid URL."),
    ("", "Not a valid URL."),
    ("https://billing.blue.example/" + "a" * 2030 + "/includes/api.php",
     "Longer than 2048 characters."),
    ("https://billing.blue.example/includes/api.php\n", "Must not contain whitespace, control "
     "or non-ASCII characters (write international names in punycode)."),
    ("https://bücher.example/includes/api.php", "Must not contain whitespace, control or "
     "non-ASCII characters (write international names in punycode)."),
    ("https://billing.blue.example\x7f/includes/api.php", "Must not contain whitespace, "
     "control or non-ASCII characters (write international names in punycode)."),
    ("https://billing.blue.example/my whmcs/includes/api.php", "Must not contain whitespace, "
     "control or non-ASCII characters (write international names in punycode)."),
    ("https://billing.blue.example/whmcs\x01/includes/api.php", "Must not contain whitespace, "
     "control or non-ASCII characters (write international names in punycode)."),
    ("https://billing.blue.example:99999/includes/api.php", "Not a valid URL."),
    ("ftp://billing.blue.example/includes/api.php", "Must be an https:// URL."),
    ("http://billing.blue.example/includes/api.php",
     "Must be an https:// URL (the API secret would travel in clear)."),
    ("https://admin@billing.blue.example/includes/api.php",
     "Must not contain credentials: give them as api_identifier/api_secret."),
    ("https://billing.blue.example/includes/api.php?action=DeleteClient",
     "Must not have a query string or fragment."),
    ("https://billing.blue.example/includes/api.php#top",
     "Must not have a query string or fragment."),
    ("https://billing.blue.example/includes/api.php?",
     "Must not have a query string or fragment."),
    ("https://billing.blue.example/includes/api.php#",
     "Must not have a query string or fragment."),
    ("https://billing.blue.example/admin/index.php",
     "Must be the WHMCS API endpoint, ending in /includes/api.php."),
    ("https://billing.blue.example/x/../includes/api.php",
     "Must be the WHMCS API endpoint, ending in /includes/api.php."),
    ("https://billing.blue.example/x/./includes/api.php",
     "Must be the WHMCS API endpoint, ending in /includes/api.php."),
    ("https:///includes/api.php", "Must name a host."),
    ("https://[fe80::1%25eth0]/includes/api.php", "IPv6 zone identifiers are not accepted."),
    # urlsplit lets a bracketed "IPvFuture" host through; ipaddress does not read it.
    ("https://[vf.x:y]/includes/api.php", "Not a valid IPv6 address."),
    ("https://-billing.blue.example/includes/api.php", "Not a valid host name."),
    ("https://billing..example/includes/api.php", "Not a valid host name."),
    ("https://billing_blue.example/includes/api.php", "Not a valid host name."),
    ("https://1.2.3.999/includes/api.php", "Not a valid host name."),
    ("https://billing.0x1f/includes/api.php", "Not a valid host name."),
    ("https://127.0.0.1/includes/api.php",
     "Points at a loopback address; the coordinator does not fetch there."),
    ("https://169.254.169.254/includes/api.php", "Points at a link-local address (this "
     "includes cloud metadata, 169.254.169.254); the coordinator does not fetch there."),
    ("https://224.0.0.1/includes/api.php",
     "Points at a multicast address; the coordinator does not fetch there."),
    ("https://0.0.0.0/includes/api.php",
     "Points at the unspecified address; the coordinator does not fetch there."),
    ("https://10.1.2.3/includes/api.php",
     "Points at a private or reserved address; the coordinator does not fetch there."),
    ("https://[::ffff:127.0.0.1]/includes/api.php",
     "Points at a loopback address; the coordinator does not fetch there."),
    # IPv6 forms that carry an IPv4 address (6to4, Teredo, NAT64) are judged by that address.
    ("https://[2002:7f00:1::]/includes/api.php",
     "Points at a loopback address; the coordinator does not fetch there."),
    ("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/includes/api.php",
     "Points at a loopback address; the coordinator does not fetch there."),
    ("https://[64:ff9b::7f00:1]/includes/api.php",
     "Points at a loopback address; the coordinator does not fetch there."),
    ("https://localhost/includes/api.php",
     "Must not name an internal host (localhost, metadata, .internal, .local)."),
    ("https://localhost./includes/api.php",  # the root's trailing dot hides no internal name
     "Must not name an internal host (localhost, metadata, .internal, .local)."),
    ("https://billing/includes/api.php", "Must be a fully qualified host name."),
    ("https://rebind.example/includes/api.php", "The host resolves to a private or reserved "
     "address; the coordinator does not fetch there."),
]


@pytest.mark.parametrize("url, message", REFUSALS)
def test_each_refusal_says_exactly_what_is_wrong(url, message):
    with pytest.raises(UnsafeURL) as refused:
        validate_system_url(url, UrlPolicy(resolver=FakeResolver()))
    assert (refused.value.message, refused.value.errors) == (message, {"json": {"url": [message]}})


@pytest.mark.parametrize("url", [
    "https://billing.blue.example/" + "w" * (2048 - 46) + "/includes/api.php",  # 2048 exactly
    "https://billing.blue.example/~acme/includes/api.php",
    "https://billing.blue.example./includes/api.php",  # a fully qualified name's root dot
    "HTTPS://Billing.Blue.Example:8443/includes/api.php",
    "https://93.184.216.34/includes/api.php",
])
def test_urls_an_admin_may_give_are_kept_as_given(url):
    assert validate_system_url(url, UrlPolicy(resolver=FakeResolver())) == url


@pytest.mark.parametrize("url, config, message", [
    ("http://billing.blue.example/includes/api.php", STRICT,
     "Must be an https:// URL (the API secret would travel in clear)."),
    ("https://gone.example/includes/api.php", STRICT, "The host gone.example does not resolve."),
    ("https://empty.example/includes/api.php", LAB, "The host empty.example does not resolve."),
    ("https://rebind.example/includes/api.php", STRICT, "The host resolves to a private or "
     "reserved address; the coordinator does not fetch there."),
    ("https://zoned.example/includes/api.php", STRICT, "The host resolves to a link-local "
     "address (this includes cloud metadata, 169.254.169.254); the coordinator does not fetch "
     "there."),
])
def test_each_fetch_refusal_says_exactly_why(url, config, message):
    """The failed sync shows this text to the admin (its error): what to change, exactly."""
    resolver = FakeResolver({**PUBLIC_DNS, "empty.example": [],
                             "zoned.example": ["93.184.216.34", "fe80::1%eth0"]})
    with pytest.raises(UnsafeURL) as refused:
        check_fetch_url(url, config, resolver)
    assert (refused.value.message, refused.value.errors) == (message, {"json": {"url": [message]}})


def test_the_system_resolver_answers_each_address_once():
    # No DNS in tests: an IP literal and the hosts file's localhost resolve without a network.
    assert resolve("127.0.0.1", 443) == ["127.0.0.1"]
    assert "127.0.0.1" in resolve("localhost", 80)


@pytest.fixture
def local_http_server():
    """A real HTTP server on loopback standing in for an internal service."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"result": "success"}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/includes/api.php"
    server.shutdown()
    server.server_close()


def test_guarded_session_refuses_forbidden_peer_at_connect(local_http_server):
    """Even when the pre-fetch check was passed (rebinding), the connect itself is refused."""
    import requests

    from coordinator.systems.fetch import guarded_session

    session = guarded_session({**STRICT, "ALLOW_HTTP_SYSTEM_URLS": True})
    with pytest.raises(requests.ConnectionError, match="forbidden address 127.0.0.1"):
        session.post(local_http_server, data={"action": "GetInvoices"}, timeout=5)
    session.close()


def test_guarded_session_plain_in_labs(local_http_server):
    from coordinator.systems.fetch import guarded_session

    session = guarded_session(LAB)
    response = session.post(local_http_server, data={"action": "GetInvoices"}, timeout=5)
    assert response.json() == {"result": "success"}
    session.close()


def test_guarded_session_refuses_a_forbidden_peer_over_https_too(local_http_server):
    """https is what production uses: its connections are checked before the TLS handshake
    (a plain listener here, so a connection that was not checked would fail in TLS instead)."""
    import requests

    from coordinator.systems.fetch import guarded_session

    session = guarded_session(STRICT)
    with pytest.raises(requests.ConnectionError, match="forbidden address 127.0.0.1"):
        session.post(local_http_server.replace("http://", "https://"), timeout=5)
    session.close()


def test_guarded_session_ignores_proxies_from_the_environment(monkeypatch):
    """A proxy would connect in our place, to an address the peer check never sees."""
    from coordinator.systems.fetch import guarded_session

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    settings = guarded_session(STRICT).merge_environment_settings(URL, {}, None, None, None)
    assert settings["proxies"] == {}
    lab = guarded_session(LAB).merge_environment_settings(URL, {}, None, None, None)
    assert lab["proxies"]["https"] == "http://proxy.example:3128"  # labs keep their proxy
