"""Security evidence against the real thing: gunicorn with several workers on a real Valkey.

What the in-process tests of the other modules cannot show: a rotated or revoked token stops
working at once in *every* worker process; the rate limit holds across workers; secrets appear
in no response, no log line the process writes, no metric, and not in the AOF on disk; headers
are on every answer the server sends, errors included.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from cryptography.fernet import Fernet

from coordinator import keys
from coordinator.ops.embedded import ValkeyServer
from tests.faults.processes import GunicornCoordinator
from tests.support import initialise_numbering

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "isa_" + secrets.token_urlsafe(32)
FERNET_KEY = Fernet.generate_key().decode()
API_SECRET = "whmcs-secret-" + secrets.token_hex(12)
ACCESS_KEY = "whmcs-access-" + secrets.token_hex(12)
PUBLIC_URL = "https://93.184.216.34/includes/api.php"  # an IP literal: no DNS, never contacted
RATE_LIMIT = 30
RATE_WINDOW = 3600
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Recorder:
    """Every request goes through here, so every answer can be searched for secrets."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.seen: list[str] = []
        self.tokens: set[str] = {ADMIN_TOKEN}

    def call(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Connection": "close", **kwargs.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = requests.request(method, self.base_url + path, headers=headers, timeout=10,
                                    **kwargs)
        self.seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    def new_system(self, name: str) -> str:
        response = self.call("POST", "/v1/systems", ADMIN_TOKEN, json={
            "name": name, "url": PUBLIC_URL, "api_identifier": f"ident-{name}",
            "api_secret": API_SECRET, "access_key": ACCESS_KEY})
        assert response.status_code == 201, response.text
        token = response.json()["agent_token"]
        self.shown_once(token)
        return token

    def shown_once(self, token: str) -> None:
        """The last answer disclosed ``token`` on purpose (API.md: shown once): not a leak."""
        assert token in self.seen[-1]
        self.seen.pop()
        self.tokens.add(token)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("security-stack")
    valkey = ValkeyServer(base / "valkey").start()
    with redis.Redis.from_url(valkey.url, decode_responses=True) as client:
        initialise_numbering(client)
    coordinator = GunicornCoordinator(base / "gunicorn", {
        "REDIS_URL": valkey.url, "ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEYS": FERNET_KEY,
        "RATE_LIMIT_AGENT": RATE_LIMIT, "RATE_LIMIT_ADMIN": 0, "RATE_LIMIT_WINDOW": RATE_WINDOW,
        "RATE_LIMIT_AUTH_FAILURES": 1000,  # this module's 401s come from one address
    }, workers=3, threads=2).start()
    yield valkey, coordinator, Recorder(coordinator.url)
    coordinator.stop()
    valkey.stop()


def _allocate(rec: Recorder, token: str, reference: str):
    return rec.call("POST", "/v1/allocations", token,
                    json={"document": "invoice", "reference": reference, "date": "2026-11-21"})


def test_agent_token_touches_only_its_own_system(stack):
    _, _, rec = stack
    blue, red = rec.new_system("blue"), rec.new_system("red")
    mine = _allocate(rec, blue, "b-1")
    theirs = _allocate(rec, red, "r-1")
    assert mine.status_code == theirs.status_code == 201
    red_id = theirs.json()["id"]
    forbidden = [
        ("GET", f"/v1/allocations/{red_id}", None),
        ("POST", f"/v1/allocations/{red_id}/confirm", {"invoicenum": "X"}),
        ("POST", f"/v1/allocations/{red_id}/void", {"reason": "not mine"}),
        ("GET", "/v1/systems", None), ("GET", "/v1/systems/red", None),
        ("PATCH", "/v1/systems/red", {"description": "hijacked"}),
        ("POST", "/v1/systems/red/agent-token", None), ("DELETE", "/v1/systems/red", None),
        ("GET", "/v1/sequences", None), ("PATCH", "/v1/sequences/invoice", {"increment": 2}),
        ("GET", "/v1/sequences/invoice/ledger", None),
    ]
    for method, path, body in forbidden:
        response = rec.call(method, path, blue, json=body)
        assert response.status_code == 403, (method, path, response.status_code, response.text)
        assert response.json()["code"] == 403
    after = rec.call("GET", f"/v1/allocations/{red_id}", ADMIN_TOKEN).json()
    assert after["status"] == "issued" and after["system"] == "red"
    assert rec.call("GET", "/v1/systems/red", ADMIN_TOKEN).json().get("description", "") == ""


def test_rotated_and_revoked_tokens_stop_at_once_in_every_worker(stack):
    _, coordinator, rec = stack
    old = rec.new_system("green")
    assert _allocate(rec, old, "g-1").status_code == 201
    rotated = rec.call("POST", "/v1/systems/green/agent-token", ADMIN_TOKEN)
    assert rotated.status_code in (200, 201), rotated.text
    new = rotated.json()["agent_token"]
    rec.shown_once(new)
    # Fresh connections land on all workers: none may still accept the old token.
    statuses = {_allocate(rec, old, f"g-old-{i}").status_code for i in range(12)}
    assert statuses == {401}, statuses
    assert _allocate(rec, new, "g-2").status_code == 201
    assert len(coordinator.worker_pids()) == 3
    deleted = rec.call("DELETE", "/v1/systems/green", ADMIN_TOKEN)
    assert deleted.status_code in (200, 204), deleted.text
    statuses = {_allocate(rec, new, f"g-del-{i}").status_code for i in range(12)}
    assert statuses == {401}, statuses


def test_revoked_admin_and_auditor_tokens_stop_at_once_in_every_worker(stack):
    _, coordinator, rec = stack
    made = {}
    for role in ("auditor", "admin"):
        created = rec.call("POST", "/v1/tokens", ADMIN_TOKEN, json={"role": role, "label": role})
        assert created.status_code == 201, created.text
        made[role] = created.json()
        rec.shown_once(made[role]["token"])
    listed = rec.call("GET", "/v1/tokens", ADMIN_TOKEN)
    assert {t["id"] for t in listed.json()} >= {m["id"] for m in made.values()}
    reader, admin = made["auditor"]["token"], made["admin"]["token"]
    # Fresh connections land on all workers: every one accepts the new tokens...
    assert {rec.call("GET", "/v1/warnings", reader).status_code for _ in range(12)} == {200}
    assert {rec.call("GET", "/v1/systems", admin).status_code for _ in range(12)} == {200}
    assert rec.call("PATCH", "/v1/sequences/invoice", reader,
                    json={"increment": 2}).status_code == 403
    # ...and once revoked, none does, from the very next request.
    for role in made:
        revoked = rec.call("DELETE", f"/v1/tokens/{made[role]['id']}", ADMIN_TOKEN)
        assert revoked.status_code == 200, revoked.text
    assert {rec.call("GET", "/v1/warnings", reader).status_code for _ in range(12)} == {401}
    assert {rec.call("GET", "/v1/systems", admin).status_code for _ in range(12)} == {401}
    assert len(coordinator.worker_pids()) == 3


def _worker_of(coordinator: GunicornCoordinator, conn: http.client.HTTPConnection) -> int:
    """The pid of the worker holding the server side of ``conn`` (sockets in /proc)."""
    port = conn.sock.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)) == (
                coordinator.port, port):
            inodes.add(f"socket:[{fields[9]}]")
    for pid in coordinator.worker_pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    raise AssertionError("no worker holds the connection")


def _on_worker(coordinator, pid, method, path, token) -> int:
    """Send one request through worker ``pid`` (any worker for None); return (status, pid).

    A fresh connection is first pinned with GET /livez (no token, so no lookup) until that
    worker holds it; a connection the server closed meanwhile is simply replaced.
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", coordinator.port, timeout=10)
        try:
            conn.request("GET", "/livez")
            conn.getresponse().read()
            worker = _worker_of(coordinator, conn)
            if pid not in (None, worker):
                continue
            conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            return response.status, worker
        except (http.client.RemoteDisconnected, ConnectionError):
            continue
        finally:
            conn.close()
    raise AssertionError(f"no connection reached worker {pid} within 30 s")


def test_a_token_cached_in_one_worker_is_refused_there_once_revoked_through_another(stack):
    """Issue 13: admin tokens (no rate limit here) are served from each worker's cache, which
    Redis invalidates: revoked through worker B, refused by worker A on its very next
    request."""
    valkey, coordinator, rec = stack
    created = rec.call("POST", "/v1/tokens", ADMIN_TOKEN, json={"role": "admin",
                                                                "label": "cached"})
    assert created.status_code == 201, created.text
    made = created.json()
    rec.shown_once(made["token"])
    status, a = _on_worker(coordinator, None, "GET", "/v1/whoami", made["token"])
    assert status == 200  # worker A looked the token up: now it is in A's cache
    others = [pid for pid in coordinator.worker_pids() if pid != a]

    def hgets() -> int:
        stats = redis.Redis.from_url(valkey.url).info("commandstats")
        return stats.get("cmdstat_hget", {}).get("calls", 0)

    before = hgets()
    assert _on_worker(coordinator, a, "GET", "/v1/whoami", made["token"])[0] == 200
    assert hgets() == before  # served from A's cache: the token was not read again
    revoked, b = _on_worker(coordinator, others[0], "DELETE", f"/v1/tokens/{made['id']}",
                            ADMIN_TOKEN)
    assert (revoked, b != a) == (200, True)
    assert _on_worker(coordinator, a, "GET", "/v1/whoami", made["token"])[0] == 401


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/", "http://169.254.169.254/includes/api.php",
    "https://2852039166/includes/api.php", "https://0xa9fea9fe/includes/api.php",
    "https://[::ffff:169.254.169.254]/includes/api.php", "https://[fe80::1]/includes/api.php",
    "https://[fd00:ec2::254]/includes/api.php", "https://100.100.100.200/includes/api.php",
    "https://127.0.0.1:6379/includes/api.php", "https://[::1]/includes/api.php",
    "gopher://127.0.0.1:6379/_FLUSHALL", "file:///etc/passwd",
])
def test_metadata_and_link_local_urls_refused(stack, url):
    valkey, _, rec = stack
    before = redis.Redis.from_url(valkey.url).dbsize()
    response = rec.call("POST", "/v1/systems", ADMIN_TOKEN, json={
        "name": "ssrf", "url": url, "api_identifier": "i", "api_secret": "s"})
    assert response.status_code == 422, response.text
    assert "url" in json.dumps(response.json().get("errors", {}))
    assert redis.Redis.from_url(valkey.url).dbsize() == before


def test_private_urls_accepted_only_when_allowed(tmp_path, stack):
    valkey, _, _ = stack
    allowed = GunicornCoordinator(tmp_path, {
        "REDIS_URL": valkey.url, "ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEYS": FERNET_KEY,
        "ALLOW_PRIVATE_SYSTEM_URLS": 1, "RATE_LIMIT_ADMIN": 0}, workers=1, threads=1).start()
    try:
        response = Recorder(allowed.url).call("POST", "/v1/systems", ADMIN_TOKEN, json={
            "name": "lab", "url": "https://169.254.169.254/includes/api.php",
            "api_identifier": "i", "api_secret": "s"})
        assert response.status_code == 201, response.text
    finally:
        allowed.stop()
        redis.Redis.from_url(valkey.url).delete(keys.SYSTEMS)


def test_burst_gets_429_with_retry_after_across_workers(stack):
    _, _, rec = stack
    # Windows are fixed (aligned to the epoch): the exact count holds for a burst inside one.
    # Should a burst straddle a boundary (one in RATE_WINDOW / burst length), a fresh token
    # bursts again at once in the new window, which has room for many bursts: no waiting.
    for attempt in range(2):
        token = rec.new_system(f"burst{attempt}")
        window = time.time() // RATE_WINDOW
        responses = [_allocate(rec, token, f"burst-{i}") for i in range(RATE_LIMIT + 10)]
        if time.time() // RATE_WINDOW == window:
            break
    else:
        pytest.fail("two bursts in a row straddled a window boundary")
    limited = [r for r in responses if r.status_code == 429]
    # One counter in Redis for all workers: exactly the limit gets through.
    assert len(responses) - len(limited) == RATE_LIMIT, [r.status_code for r in responses]
    for response in limited:
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["code"] == 429
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value


def test_security_headers_on_every_answer(stack):
    _, _, rec = stack
    token = rec.new_system("headers")
    deep = "[" * 50_000 + "]" * 50_000
    calls = [
        ("GET", "/livez", None, {}), ("GET", "/readyz", None, {}), ("GET", "/metrics", None, {}),
        ("GET", "/openapi.json", None, {}), ("GET", "/nope", None, {}),
        ("DELETE", "/livez", None, {}), ("GET", "/v1/systems", None, {}),
        ("GET", "/v1/systems", token, {}), ("GET", "/v1/systems/none", ADMIN_TOKEN, {}),
        ("POST", "/v1/allocations", token, {"json": {"document": "x"}}),
        ("POST", "/v1/allocations", token, {"data": "A" * 100_000,
                                            "headers": {"Content-Type": "application/json"}}),
        ("POST", "/v1/allocations", token, {"data": deep[:60_000],
                                            "headers": {"Content-Type": "application/json"}}),
        ("POST", "/v1/allocations", token, {"data": (b"A" * 1024 for _ in range(200)),
                                            "headers": {"Content-Type": "application/json"}}),
    ]
    for method, path, auth_token, kwargs in calls:
        response = rec.call(method, path, auth_token, **kwargs)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (method, path, response.status_code, name)
        assert "default-src 'none'" in response.headers.get("Content-Security-Policy", "")
        if response.status_code >= 400:
            assert response.status_code < 500, (method, path, response.status_code)
            assert set(response.json()) == {"code", "status", "message", "errors"}


def test_unparseable_request_line_still_gets_the_error_shape(stack):
    _, coordinator, _ = stack
    response = requests.get(coordinator.url + "/livez?" + "a" * 10_000, timeout=10)
    assert response.status_code == 414
    assert response.headers.get("Content-Type") == "application/json"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.json()["code"] == 414
    assert set(response.json()) == {"code", "status", "message", "errors"}


def test_broken_header_gets_the_error_shape(stack):
    _, coordinator, _ = stack
    host, port = coordinator.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["code"] == 400


def test_no_secret_in_answers_logs_metrics_or_on_disk(stack):
    valkey, coordinator, rec = stack
    token = rec.new_system("leaky")
    # Put the secrets where a careless server might echo them.
    rec.call("POST", "/v1/allocations", token, json={"document": "invoice",
                                                     "reference": "x\n" + token})
    rec.call("GET", f"/v1/systems/leaky?api_secret={API_SECRET}", ADMIN_TOKEN)
    rec.call("PATCH", "/v1/systems/leaky", ADMIN_TOKEN, json={"api_secret": API_SECRET + "2",
                                                              "bogus": token})
    rec.call("GET", "/v1/systems", "isa_wrong" + ADMIN_TOKEN[9:])
    rec.call("GET", "/v1/systems/leaky", ADMIN_TOKEN)
    metrics = rec.call("GET", "/metrics").text
    raw = redis.Redis.from_url(valkey.url)
    raw.execute_command("BGREWRITEAOF")
    dumped = b"".join(raw.dump(key) or b"" for key in raw.keys("*"))
    on_disk = b"".join(p.read_bytes() for p in Path(valkey.data_dir).rglob("*")
                       if p.is_file() and p.suffix not in (".sock",))
    places = {
        "responses": "\n".join(rec.seen), "gunicorn stderr": coordinator.stderr_text(),
        "metrics": metrics,
    }
    needles = {"api secret": API_SECRET, "access key": ACCESS_KEY, "Fernet key": FERNET_KEY,
               **{f"token {t[:6]}…": t for t in rec.tokens}}
    found = [f"{what} in {where}" for what, needle in needles.items()
             for where, text in places.items() if needle in text]
    for what, needle in needles.items():
        if what.startswith("token"):
            continue  # tokens are stored as hashes; their hashes are no secret
        for where, blob in {"Redis DUMP": dumped, "AOF/data dir": on_disk}.items():
            if needle.encode() in blob:
                found.append(f"{what} in {where}")
    for token_value in rec.tokens:
        if token_value.encode() in on_disk or token_value.encode() in dumped:
            found.append(f"token {token_value[:6]}… stored in clear")
    assert "/v1/systems" in coordinator.stderr_text(), "request logs must be in what we search"
    assert not found, found


def test_secret_readable_only_with_the_key(stack):
    """A curious DB admin with the AOF but not the key sees ciphertext; with the key, the secret."""
    valkey, _, rec = stack
    rec.new_system("keyed")
    raw = redis.Redis.from_url(valkey.url, decode_responses=True)
    stored = json.dumps(raw.hgetall(keys.system("keyed")))
    assert API_SECRET not in stored
    tokens = [v for v in raw.hgetall(keys.system("keyed")).values() if v.startswith("gAAAA")]
    assert tokens, "the secret is stored as a Fernet token"
    script = ("import sys; from cryptography.fernet import Fernet, InvalidToken\n"
              "try: print(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()).decode())\n"
              "except InvalidToken: print('INVALID')")
    wrong = Fernet.generate_key().decode()
    outputs = {key: {subprocess.run([sys.executable, "-c", script, key, t], capture_output=True,
                                    text=True, check=True).stdout.strip() for t in tokens}
               for key in (FERNET_KEY, wrong)}
    assert outputs[wrong] == {"INVALID"}
    assert API_SECRET in outputs[FERNET_KEY]
