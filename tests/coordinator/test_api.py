"""The HTTP contract as tools read it: /openapi.json, docs/API.md and what the app serves agree.

* the served document validates (openapi-spec-validator) and every pattern in it means the same
  to JavaScript (ECMA-262, checked with ``regress``, the Rust ECMA engine) as to the Python that
  validates with it;
* every operation states its success body, its error answers (the one error schema) and who may
  call it (the roles of ``auth.require``);
* every route of the app is in the document and in docs/API.md, so a new endpoint cannot land
  undocumented;
* a body not sent as JSON is refused with 415, on every JSON endpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import regress
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, validate
from openapi_spec_validator import validate as validate_spec

from coordinator import api
from tests.support import snapshot

pytestmark = pytest.mark.integration

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"
METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC = {"/livez", "/readyz", "/healthz", "/metrics"}
"""The operations anyone may call (no token); every other one needs a role."""
NOT_IN_DOCUMENT = {"/openapi.json"}
"""Routes the OpenAPI document does not list: itself (docs/API.md names it)."""


@pytest.fixture
def document(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _patterns(node) -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items()
                for p in ([v] if k == "pattern" and isinstance(v, str) else _patterns(v))]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


def _openapi_path(rule: str) -> str:
    """``/v1/allocations/<string:allocation_id>`` → ``/v1/allocations/{allocation_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _api_rules(app):
    return [rule for rule in app.url_map.iter_rules() if api.is_json_api_rule(rule)]


# -- the document as a whole -------------------------------------------------------------------

def test_served_document_validates(document):
    validate_spec(document)
    assert document["openapi"].startswith("3.")


def test_every_route_is_in_the_document_and_in_docs_api_md(app, document):
    text = API_MD.read_text()
    lines = text.splitlines()
    missing_doc, missing_md = [], []
    for rule in _api_rules(app):
        path = _openapi_path(rule.rule)
        methods = sorted(m for m in rule.methods if m.lower() in METHODS)
        for method in methods:
            if path not in NOT_IN_DOCUMENT and method.lower() not in document["paths"].get(
                    path, {}):
                missing_doc.append(f"{method} {path}")
            # docs/API.md names it on one line: the method (e.g. `GET|PATCH`) before the path.
            pattern = re.compile(rf"\b{method}\b[^\n]*?`?{re.escape(path)}(?![\w/{{])")
            if not any(pattern.search(line) for line in lines):
                missing_md.append(f"{method} {path}")
    assert not missing_doc, f"routes missing from /openapi.json: {missing_doc}"
    assert not missing_md, f"routes missing from docs/API.md: {missing_md}"


def test_the_html_rule_excludes_only_the_dashboard_and_static_files(app):
    excluded = [r.rule for r in app.url_map.iter_rules() if not api.is_json_api_rule(r)]
    assert all(r.startswith(("/static/", "/ui")) for r in excluded), excluded
    assert api.is_json_api_rule(next(app.url_map.iter_rules("numbering.Allocations")))


def test_docs_api_md_says_it_must_agree_with_the_served_document():
    text = API_MD.read_text()
    assert "/openapi.json" in text and "must say the same" in text


# -- each operation ----------------------------------------------------------------------------

def _resolve(document: dict, node: dict) -> dict:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = document["components"][section][name]
    return node


def test_every_operation_documents_its_success_body(document):
    undocumented = []
    for path, method, operation in _operations(document):
        successes = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
        assert successes, f"{method} {path}: no 2xx response"
        for code, response in successes.items():
            if code == "204":
                continue  # No Content: nothing to describe
            content = _resolve(document, response).get("content", {})
            media = {"/metrics": "text/plain",
                     "/v1/series/{series}/sequences/{name}/ledger/export": "application/x-ndjson",
                     }.get(path, "application/json")
            if "schema" not in content.get(media, {}):
                undocumented.append(f"{method.upper()} {path} {code}")
    assert not undocumented, f"2xx without a {media} schema: {undocumented}"


def test_every_error_answer_is_documented_with_the_one_error_schema(document):
    wrong = []
    for path, method, operation in _operations(document):
        for code, response in operation["responses"].items():
            if code != "default" and int(code) < 400:
                continue
            if path in ("/readyz", "/healthz") and code == "503":
                continue  # readiness answers its report, with the status of the checks
            schema = _resolve(document, response).get("content", {}).get(
                "application/json", {}).get("schema")
            if schema != {"$ref": "#/components/schemas/Error"}:
                wrong.append(f"{method.upper()} {path} {code}: {schema}")
        if operation["security"]:
            assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)
            for code in ("429", "503"):
                assert "Retry-After" in operation["responses"][code]["headers"], (method, path)
        if "requestBody" in operation:
            assert "415" in operation["responses"], (method, path)
    assert not wrong, wrong
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "status", "message", "errors"}


def test_every_operation_states_who_may_call_it_from_auth_require(app, document):
    schemes = document["components"]["securitySchemes"]
    for rule in _api_rules(app):
        view = app.view_functions[rule.endpoint]
        path = _openapi_path(rule.rule)
        if path in NOT_IN_DOCUMENT:
            continue
        for method in (m.lower() for m in rule.methods if m.lower() in METHODS):
            operation = document["paths"][path][method]
            function = getattr(getattr(view, "view_class", None), method, view)
            roles = list(getattr(function, api.AUTH_ATTRIBUTE, ()))
            assert operation["x-token-roles"] == roles
            assert operation["security"] == [{role: []} for role in roles]
            for role in roles:
                assert schemes[role] == {"type": "http", "scheme": "bearer",
                                         "description": schemes[role]["description"]}
                assert f"`{role}`" in operation["description"]
            if not roles:
                assert "**Auth:** none" in operation["description"], (method, path)
    ops = {(p, m): o for p, m, o in _operations(document)}
    # A view that checks its token some other way than auth.require would read as public here:
    # public operations are the known ones, so such a view cannot slip in documented as open.
    public = {p for (p, _), o in ops.items() if not o["security"]}
    assert public == PUBLIC, "new public operations? use auth.require or list them in PUBLIC"
    assert ops[("/v1/allocations", "post")]["x-token-roles"] == ["agent"]
    assert ops[("/v1/systems", "post")]["x-token-roles"] == ["admin"]
    assert ops[("/livez", "get")]["security"] == []


# -- patterns: the same language in Python and in JavaScript --------------------------------

_PYTHON_ONLY = re.compile(r"\\[AZzdDwWsSbB]|\(\?[PiLmsux<#=!]|\\[pP]\{|[*+?}]\+")
"""Escapes and groups whose meaning differs between Python and ECMA-262, or exist in one only
(``\\d`` is Unicode digits in Python, ASCII in JavaScript; ``\\Z`` is an error there)."""


def test_every_pattern_is_in_the_common_subset_and_compiles_in_both(document):
    patterns = _patterns(document)
    assert patterns, "the document has patterns to check"
    for pattern in patterns:
        assert not _PYTHON_ONLY.search(pattern), pattern
        assert pattern.startswith("^") and pattern.endswith("$"), pattern
        re.compile(pattern)
        regress.Regex(pattern, "u")  # raises on what ECMA-262 (unicode mode) rejects


def test_a_python_only_pattern_is_caught():
    with pytest.raises(regress.RegressError):
        regress.Regex(r"^[a-z]{1,3}\Z", "u")
    assert _PYTHON_ONLY.search(r"^\d{4}$")


@pytest.fixture(scope="module")
def served_patterns() -> list[str]:
    from coordinator.app import create_app

    app = create_app({"TESTING": True, "REDIS_URL": "redis://127.0.0.1:1"})
    return sorted(set(_patterns(app.test_client().get("/openapi.json").get_json())))


def _candidates(pattern: str):
    matching = st.from_regex(pattern, fullmatch=True)
    return st.one_of(
        matching,
        matching.map(lambda s: s + "\n"),  # Python's "$" matches before a final newline
        matching.map(lambda s: "\n" + s),
        matching.map(lambda s: s.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))),
        st.text(max_size=12),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_python_validation_and_javascript_agree_on_every_string(served_patterns, data):
    pattern = data.draw(st.sampled_from(served_patterns))
    value = data.draw(_candidates(pattern))
    javascript = regress.Regex(pattern, "u").find(value) is not None
    python = True
    try:
        api.FullMatch(pattern)(value)
    except ValidationError:
        python = False
    assert python == javascript, (pattern, value)


def _schema_classes():
    seen, todo = set(), list(Schema.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return [c for c in seen if c.__module__.startswith("coordinator.")]


def test_every_regexp_validator_of_the_coordinator_matches_in_full(app):
    loose = []
    for cls in _schema_classes():
        for name, field in cls._declared_fields.items():
            for validator in field.validators:
                if isinstance(validator, validate.Regexp) and not isinstance(
                        validator, api.FullMatch):
                    loose.append(f"{cls.__module__}.{cls.__name__}.{name}")
    assert not loose, f"validate.Regexp lets a trailing newline through '$': {loose}"


def test_a_period_with_a_trailing_newline_is_refused(client, admin):
    response = client.get("/v1/sequences/invoice/ledger", query_string={"period": "2026\n"},
                          headers=admin)
    assert response.status_code == 422
    assert "period" in response.get_json()["errors"]["query"]


# -- errors in one shape; bodies must be JSON --------------------------------------------------

def test_errors_always_carry_errors(client, admin):
    for response in (client.get("/v1/systems/nope", headers=admin),
                     client.get("/v1/sequences"),
                     client.get("/no/such/route")):
        body = response.get_json()
        assert body["errors"] == {} and body["code"] == response.status_code


def test_gunicorn_own_errors_have_the_one_shape_too():
    from coordinator.ops.gunicorn_worker import error_response

    raw = error_response(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n<html>")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400 Bad Request")
    assert json.loads(body) == {"code": 400, "status": "Bad Request", "errors": {},
                                "message": "The request could not be parsed: Bad Request"}


@pytest.mark.parametrize("method, path, who", [
    ("POST", "/v1/allocations", "agent"),
    ("PATCH", "/v1/sequences/invoice", "admin"),
    ("POST", "/v1/systems", "admin"),
    ("POST", "/v1/systems/blue/syncs", "admin"),
])
@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "text/plain", None,
])
def test_a_body_not_sent_as_json_is_415_and_changes_nothing(
        client, admin, agent, redis_client, method, path, who, content_type):
    headers = admin if who == "admin" else agent("blue")
    if content_type:
        headers = {**headers, "Content-Type": content_type}
    before = snapshot(redis_client)
    response = client.open(path, method=method, headers=headers,
                           data=b'{"document": "invoice", "reference": "1", "next_number": 5}')
    assert response.status_code == 415, response.get_json()
    body = response.get_json()
    assert body["code"] == 415 and body["status"] == "Unsupported Media Type"
    assert "Content-Type: application/json" in body["message"]
    assert body["errors"] == {"headers": {"Content-Type": ["Must be application/json."]}}
    assert snapshot(redis_client) == before


def test_json_with_a_charset_and_empty_bodies_still_work(client, agent, admin):
    taken = client.post("/v1/allocations", headers={
        **agent("blue"), "Content-Type": "application/json; charset=utf-8"},
        data=b'{"document": "invoice", "reference": "1", "date": "2026-11-21"}')
    assert taken.status_code == 201
    # No body at all: the schema names what is missing, as before.
    empty = client.post("/v1/allocations", headers=agent("blue"))
    assert empty.status_code == 422 and "document" in empty.get_json()["errors"]["json"]
