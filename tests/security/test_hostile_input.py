"""Invariant 7 under hostile input: a clear JSON error in the one shape, and nothing changed.

Each rejected request is bracketed by a snapshot of every Redis key (DUMP); accepted odd input
(unicode, Lua- or SQL-looking references) must be stored and returned verbatim.
"""

from __future__ import annotations

import json

import pytest

from tests.security.conftest import assert_error_shape, snapshot

DATE = "2026-11-21"


@pytest.fixture
def blue(agent_headers):
    return agent_headers("blue")


@pytest.fixture
def canary(redis_client):
    redis_client.set("canary", "still here")
    return redis_client


def _rejected(client, redis_client, method, path, codes, **kwargs):
    before = snapshot(redis_client)
    response = client.open(path, method=method, **kwargs)
    body = assert_error_shape(response, codes)
    assert snapshot(redis_client) == before, f"{method} {path} was rejected but changed Redis"
    return body


def test_oversized_body_is_413(client, redis_client, blue, canary):
    payload = {"document": "invoice", "reference": "x", "date": DATE, "pad": "A" * 200_000}
    _rejected(client, redis_client, "POST", "/v1/allocations", 413, json=payload, headers=blue)


@pytest.mark.parametrize("depth", [100, 5_000, 30_000])
def test_deeply_nested_json(client, redis_client, blue, admin, canary, depth):
    nested = "[" * depth + "]" * depth
    for path, method, headers, body in [
        ("/v1/allocations", "POST", blue, f'{{"document": "invoice", "reference": {nested}}}'),
        ("/v1/sequences/invoice", "PATCH", admin, f'{{"increment": {nested}}}'),
        ("/v1/systems", "POST", admin, nested),
    ]:
        _rejected(client, redis_client, method, path, (400, 413, 422), data=body,
                  headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize("reference", [
    "", "a\x00b", "line\nbreak", "tab\there", "\x1b[31mred", "bell\x07",
    "rtl\u202eoverride", "zero\u200bwidth", "bom\ufeff", "del\x7f", "x" * 129,
])
def test_control_characters_in_references_refused(client, redis_client, blue, canary, reference):
    _rejected(client, redis_client, "POST", "/v1/allocations", 422,
              json={"document": "invoice", "reference": reference, "date": DATE}, headers=blue)


def test_lone_surrogate_in_reference_refused(client, redis_client, blue, canary):
    raw = b'{"document": "invoice", "reference": "\\ud800", "date": "2026-11-21"}'
    _rejected(client, redis_client, "POST", "/v1/allocations", (400, 422), data=raw,
              headers={**blue, "Content-Type": "application/json"})


@pytest.mark.parametrize("reference", [
    "Rechnung-Ä-ß-ø", "請求書-10234", "🧾-10234", "x" * 128, "café",
    "cafe\u0301",  # the same word, decomposed: a different reference, byte for byte
    "'; DROP TABLE invoices; --", "redis.call('FLUSHALL')", "]]", "]==] return 1 --[==[",
    "\"; return redis.call('KEYS', '*') --", "{seq:invoice}:counter:2026", "*", "%s%n%x",
    "${jndi:ldap://x}", "<script>alert(1)</script>", "../../etc/passwd",
])
def test_odd_but_printable_references_are_plain_data(client, redis_client, blue, canary,
                                                     reference):
    payload = {"document": "invoice", "reference": reference, "date": DATE}
    first = client.post("/v1/allocations", json=payload, headers=blue)
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["reference"] == reference
    again = client.post("/v1/allocations", json=payload, headers=blue)
    assert again.status_code == 200
    assert again.get_json()["number"] == first.get_json()["number"]
    assert redis_client.get("canary") == "still here"
    got = client.get(f"/v1/allocations/{first.get_json()['id']}", headers=blue)
    assert got.get_json()["reference"] == reference


def test_composed_and_decomposed_references_stay_distinct(client, blue):
    numbers = set()
    for ref in ("café", "cafe\u0301"):
        payload = {"document": "invoice", "reference": ref, "date": DATE}
        numbers.add(client.post("/v1/allocations", json=payload, headers=blue).get_json()["number"])
    assert len(numbers) == 2


@pytest.mark.parametrize("field, value", [
    ("increment", 0), ("increment", -1), ("increment", 10**30), ("increment", 1.5),
    ("increment", "1"), ("increment", True), ("increment", None), ("increment", 1e308),
    ("next_number", 0), ("next_number", -5), ("next_number", 2**63), ("next_number", 10**15),
    ("next_number", "100"), ("next_number", 1e3), ("next_number", float("nan")),
    ("padding", -1), ("padding", 10**6), ("reset", "weekly"), ("format", ""),
    ("format", "INV-{NUMBER}\n"), ("period", "2026-13"), ("period", "../2026"),
])
def test_bad_sequence_settings_refused(client, redis_client, admin, canary, field, value):
    body = json.dumps({field: value}, allow_nan=True)
    _rejected(client, redis_client, "PATCH", "/v1/sequences/invoice", 422, data=body,
              headers={**admin, "Content-Type": "application/json"})


@pytest.mark.parametrize("date", [
    "2026-02-30", "2026-13-01", "2026-00-10", "0000-01-01", "99999-01-01", "2026-1-1",
    "21/11/2026", "2026-11-21T25:00:00", "", "2026-11-21; DROP", 20261121,
])
def test_invalid_dates_refused(client, redis_client, blue, canary, date):
    _rejected(client, redis_client, "POST", "/v1/allocations", 422,
              json={"document": "invoice", "reference": "r1", "date": date}, headers=blue)


@pytest.mark.parametrize("path", [
    "/v1/sequences/..", "/v1/sequences/../systems", "/v1/sequences/%2e%2e",
    "/v1/sequences/%2e%2e%2fsystems", "/v1/sequences/invoice%00", "/v1/sequences/..%2f..%2f",
    "/v1/sequences/redis.call('FLUSHALL')", "/v1/sequences/*",
    "/v1/systems/..", "/v1/systems/%2e%2e%2fblue", "/v1/systems/blue%00", "/v1/systems/*",
    "/v1/allocations/invoice:2026:..%2f1", "/v1/allocations/..%2f..%2fauth:tokens",
    "/v1/allocations/invoice:..:1", "/v1/allocations/invoice:2026:-1",
    "/v1/allocations/invoice:2026:99999999999999999999",
])
def test_path_traversal_in_names(client, redis_client, admin, canary, path):
    for method in ("GET", "PATCH", "DELETE"):
        _rejected(client, redis_client, method, path, (400, 404, 405, 422), json={},
                  headers=admin)


@pytest.mark.parametrize("content_type, data", [
    ("text/plain", '{"document": "invoice", "reference": "r1"}'),
    ("application/x-www-form-urlencoded", "document=invoice&reference=r1"),
    ("multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="document"'
                                        '\r\n\r\ninvoice\r\n--x--\r\n'),
    ("application/xml", "<allocation><document>invoice</document></allocation>"),
    (None, '{"document": "invoice", "reference": "r1"}'),
    ("application/json", "not json"),
    ("application/json", '["document", "invoice"]'),
    ("application/json", '"invoice"'),
    ("application/json", "null"),
    ("application/json", '{"document": "invoice", "reference": "r1", "reference": "r2"'),
    ("application/json", '{"document": "invoice", "reference": "r1", "extra": 1}'),
    ("application/json", b'\xff\xfe{\x00}\x00'),
])
def test_non_json_bodies_refused(client, redis_client, blue, canary, content_type, data):
    headers = dict(blue)
    if content_type:
        headers["Content-Type"] = content_type
    _rejected(client, redis_client, "POST", "/v1/allocations", (400, 415, 422), data=data,
              headers=headers)


def test_document_type_must_be_known(client, redis_client, blue, canary):
    for document in ("INVOICE", "invoice ", "proforma", "", None, ["invoice"]):
        _rejected(client, redis_client, "POST", "/v1/allocations", 422,
                  json={"document": document, "reference": "r1", "date": DATE}, headers=blue)
