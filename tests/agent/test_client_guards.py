"""Guards of the agent's coordinator client that the mutation run (issue 17) found without a
test."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import socket

import pytest
import requests

from agent import (
    Client,
    Config,
    CoordinatorBadResponse,
    CoordinatorRefused,
    CoordinatorUnavailable,
    CoordinatorUnreachable,
    MockTransport,
    RetryPolicy,
    mock_response,
)
from agent._client import _clock_skew
from tests.agent.test_whmcs_client import self_signed  # noqa: F401 - a fixture, used by name

from .conftest import FAST, TOKEN, FakeCoordinator, Sleeps
from .test_client import ALLOCATION, mock_client


def test_the_coordinators_certificate_is_verified_unless_a_ca_bundle_trusts_it(
    self_signed, sleeps: Sleeps  # noqa: F811
) -> None:
    """The agent token goes to the real coordinator only: a certificate nothing trusts is
    refused before any request (and not retried); `ca_bundle` trusts a private CA."""
    context, ca_path = self_signed
    fake = FakeCoordinator()
    fake.server.socket = context.wrap_socket(fake.server.socket, server_side=True)
    fake.start()
    try:
        url = f"https://localhost:{fake.server.server_address[1]}"
        with pytest.raises(CoordinatorUnreachable) as refused:
            Client(url=url, token=TOKEN, retry=FAST, sleep=sleeps).allocate("invoice", "1")
        message = str(refused.value)
        assert message.startswith(f"TLS verification of {url} failed (SSLError: ")
        assert message.endswith("); check the certificate or set ca_bundle")
        assert fake.requests == [] and sleeps == []
        trusted = Client(url=url, token=TOKEN, ca_bundle=ca_path, retry=FAST, sleep=sleeps)
        assert trusted.allocate("invoice", "1").reference == "1"
    finally:
        fake.stop()


def test_the_token_goes_only_where_the_coordinator_asks_for_it(sleeps: Sleeps) -> None:
    """`status()` probes /livez and /readyz without the agent token (a load balancer or a
    proxy in front of them need not see it) and sends it to /v1/whoami; the headers are read
    on the server side of a real loopback connection."""
    fake = FakeCoordinator()
    seen: list[tuple[str, str | None]] = []
    handle = fake._handle

    def recording(req):  # the fake's handler calls this attribute for every request
        seen.append((req.path, req.headers.get("Authorization")))
        handle(req)

    fake._handle = recording
    fake.start()
    try:
        with Client(url=fake.url, token=TOKEN, retry=FAST, sleep=sleeps) as client:
            status = client.status()
    finally:
        fake.stop()
    assert (status.live, status.ready, status.token_valid) == (True, True, True)
    assert seen[:3] == [("/livez", None), ("/readyz", None), ("/v1/whoami", f"Bearer {TOKEN}")]
    assert all(auth == f"Bearer {TOKEN}" for _, auth in seen[2:])


def test_the_client_waits_between_retries_of_an_unreachable_coordinator(sleeps: Sleeps) -> None:
    """Nobody listens on the port (a real refused connection): before each retry the client
    waits the policy's growing, jittered backoff ("equal jitter": between half a step and a
    step, the step doubling from `backoff` up to `backoff_max`)."""
    with socket.socket() as probe:  # a free loopback port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(attempts=4, backoff=1.0, backoff_max=3.0)
    with pytest.raises(CoordinatorUnreachable, match=r"after 4 attempt\(s\)"):
        Client(url=f"http://127.0.0.1:{port}", token=TOKEN, retry=policy, sleep=sleeps,
               rng=random.Random(17)).allocate("invoice", "1")
    assert len(sleeps) == 3
    for wait, (low, high) in zip(sleeps, [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0)], strict=True):
        assert isinstance(wait, float) and low <= wait <= high


def test_each_invalid_argument_is_refused_saying_what_is_wrong_and_sends_nothing(
    coordinator: FakeCoordinator, client: Client
) -> None:
    """A caller (the CLI, a script) is told exactly what to fix; the coordinator sees none of
    these; a reference of exactly 128 characters is still one."""
    refused = [
        (lambda: client.allocate("receipt", "1"),
         "document must be one of invoice, credit_note, not 'receipt'"),
        (lambda: client.allocate("invoice", True), "reference must be a string, not bool"),
        (lambda: client.allocate("invoice", 1.5), "reference must be a string, not float"),
        (lambda: client.allocate("invoice", "x" * 129),
         "reference must be 1-128 printable characters without outer spaces"),
        (lambda: client.allocate("invoice", "1", date=dt.datetime(2026, 11, 21, 10, 0)),
         "date must be a calendar date (YYYY-MM-DD), not a datetime"),
        (lambda: client.allocate("invoice", "1", date="21.11.2026"),
         "date must be YYYY-MM-DD, not '21.11.2026'"),
        (lambda: client.allocate("invoice", "1", date=20261121),
         "date must be YYYY-MM-DD, not 20261121"),
        (lambda: client.confirm("invoice:2026:1", " "),
         "invoicenum must be the non-empty number written into WHMCS"),
        (lambda: client.void("invoice:2026:1", ""),
         "a void needs a reason (the ledger keeps it for the auditor)"),
    ]
    refused += [(lambda bad=bad: client.get(bad), f"not an allocation id: {bad!r}")
                for bad in (None, "a/b/c", "acme/", "./invoice:2026:1", "..")]
    for call, message in refused:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == message
    assert coordinator.requests == []
    assert client.allocate("invoice", "x" * 128).reference == "x" * 128


def test_an_allocation_says_whether_it_is_new_and_a_confirm_records_the_invoicenum(
    coordinator: FakeCoordinator, client: Client
) -> None:
    """`replay` tells a new number (201) from one issued before (200); a read is neither.
    The invoicenum given to confirm is what the coordinator's ledger records."""
    first = client.allocate("invoice", "21", date="2026-05-05")
    again = client.allocate("invoice", "21", date="2026-05-05")
    assert (first.replay, again.replay) == (False, True)
    assert client.get(first.id).replay is None
    client.confirm(first.id, first.formatted)
    assert coordinator.allocations[first.id]["invoicenum"] == first.formatted


def test_every_request_names_the_agent_and_sends_its_body_as_json(sleeps: Sleeps) -> None:
    """The coordinator's access log names the agent; the answer asked for is JSON; a body goes
    as `Content-Type: application/json` (the coordinator refuses any other with 415)."""
    fake = FakeCoordinator()
    seen: list[tuple[str | None, str | None, str | None]] = []
    handle = fake._handle

    def recording(req):
        seen.append((req.headers.get("User-Agent"), req.headers.get("Accept"),
                     req.headers.get("Content-Type")))
        handle(req)

    fake._handle = recording
    fake.start()
    try:
        with Client(url=fake.url, token=TOKEN, retry=FAST, sleep=sleeps) as client:
            client.get(client.allocate("invoice", "1").id)
    finally:
        fake.stop()
    agent = "invoice-sync-agent/0.1"
    assert seen == [(agent, "application/json", "application/json"),
                    (agent, "application/json", None)]


def test_a_series_allocation_id_is_one_path_segment() -> None:
    """Ids of another series hold one "/" (`acme/invoice:2026:5`): sent encoded, answered."""
    asked: list[str] = []

    def handler(request: requests.PreparedRequest) -> requests.Response:
        asked.append(request.path_url)
        return mock_response(200, {**ALLOCATION, "id": "acme/invoice:2026:51"})

    client = mock_client(handler, Sleeps())
    assert client.get("acme/invoice:2026:51").id == "acme/invoice:2026:51"
    assert asked == ["/v1/allocations/acme%2Finvoice:2026:51"]


def test_an_answer_about_another_document_is_refused_saying_which(sleeps: Sleeps) -> None:
    """Never write a number meant for another document: the error names both."""
    client = mock_client(lambda request: mock_response(201, {**ALLOCATION, "reference": "9"}),
                         sleeps)
    with pytest.raises(CoordinatorBadResponse) as info:
        client.allocate("invoice", "10234")
    assert str(info.value) == "asked a number for invoice '10234', got one for invoice '9'"
    client = mock_client(lambda request: mock_response(200, ALLOCATION), sleeps)
    with pytest.raises(CoordinatorBadResponse) as info:
        client.get("invoice:2026:52")
    assert str(info.value) == "asked about allocation 'invoice:2026:52', got 'invoice:2026:51'"


@pytest.mark.parametrize(
    ("response", "kind", "error"),
    [
        (mock_response(400, {"code": 400, "status": "Bad Request", "message": "Body is not JSON",
                             "errors": {"json": {"date": ["Invalid."]}}}),
         CoordinatorRefused,
         {"code": 400, "status": "Bad Request", "message": "Body is not JSON (HTTP 400)",
          "errors": {"json": {"date": ["Invalid."]}}}),
        (mock_response(404, {"error": "no route"}), CoordinatorRefused,
         {"code": 404, "status": "Not Found", "message": "HTTP 404 Not Found", "errors": {}}),
        (mock_response(500, content=b"Internal Server Error"), CoordinatorRefused,
         {"code": 500, "status": "Internal Server Error",
          "message": "HTTP 500 Internal Server Error", "errors": {}}),
        (mock_response(501, None), CoordinatorUnavailable,
         {"code": 501, "status": "Not Implemented", "message": "HTTP 501 Not Implemented",
          "errors": {}}),
        (mock_response(599, None), CoordinatorUnavailable,
         {"code": 599, "status": "", "message": "HTTP 599", "errors": {}}),
    ],
    ids=["400-json", "404-json-without-message", "500-text", "501-empty", "599-no-reason"],
)
def test_an_error_answer_becomes_the_error_a_caller_can_act_on(
    response: requests.Response, kind: type, error: dict, sleeps: Sleeps
) -> None:
    """4xx and 500 are refusals (retrying the same request will not help), other 5xx "try
    later"; the coordinator's message and field errors are kept, else the HTTP status line."""
    with pytest.raises(kind) as info:
        mock_client(lambda request: response, sleeps).allocate("invoice", "10234")
    assert type(info.value) is kind
    assert info.value.to_json() == error
    assert sleeps == []


@pytest.mark.parametrize(("headers", "kind"), [({"Content-Type": "text/html"}, "text/html"),
                                               ({}, "no content type")])
def test_an_answer_that_is_not_json_says_what_came_instead(
    headers: dict, kind: str, sleeps: Sleeps
) -> None:
    response = mock_response(201, content=b"<html>Log in</html>", headers=headers)
    with pytest.raises(CoordinatorBadResponse) as info:
        mock_client(lambda request: response, sleeps).allocate("invoice", "10234")
    assert info.value.to_json() == {
        "code": 201, "status": "Created", "errors": {},
        "message": f"HTTP 201 from https://numbers.example/v1/allocations is not JSON ({kind}); "
                   "is a proxy or login page in the way?",
    }


def test_a_coordinator_still_throttling_after_every_attempt_is_unavailable(
    sleeps: Sleeps,
) -> None:
    """429 on every try is "try again later" (the CLI's exit code for it), never a refusal."""
    response = lambda request: mock_response(429, {"message": "Too many requests"})  # noqa: E731
    with pytest.raises(CoordinatorUnavailable) as info:
        mock_client(response, sleeps).allocate("invoice", "10234")
    assert type(info.value) is CoordinatorUnavailable
    assert str(info.value) == "Too many requests (HTTP 429) (after 4 attempt(s))"


@pytest.mark.parametrize("hours", [1, -1], ids=["ahead", "past"])
def test_a_retry_after_date_counts_from_now_in_utc(hours: int, sleeps: Sleeps) -> None:
    """`Retry-After` as a date: one in the zone `-0000` (UTC, read as naive) is waited for
    (capped); one already past adds no wait to the backoff."""
    when = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=hours)
    answers = [mock_response(503, None, headers={
        "Retry-After": email.utils.format_datetime(when)})]  # naive: "... -0000"
    assert answers[0].headers["Retry-After"].endswith("-0000")

    def handler(request: requests.PreparedRequest) -> requests.Response:
        return answers.pop(0) if answers else mock_response(201, ALLOCATION)

    policy = RetryPolicy(attempts=2, backoff=0.01, backoff_max=0.01, retry_after_max=5)
    mock_client(handler, sleeps, policy).allocate("invoice", "10234")
    assert len(sleeps) == 1
    assert sleeps[0] == 5 if hours > 0 else sleeps[0] <= 0.01


def test_each_retry_is_logged_with_what_failed_and_how_long_it_waits(
    sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    failures = [requests.ConnectionError("connection refused"), mock_response(503, None)]

    def handler(request: requests.PreparedRequest) -> requests.Response:
        if not failures:
            return mock_response(201, ALLOCATION)
        failure = failures.pop(0)
        if isinstance(failure, Exception):
            raise failure
        return failure

    policy = RetryPolicy(attempts=3, backoff=1, backoff_max=4)
    with caplog.at_level(logging.WARNING, logger="agent"):
        mock_client(handler, sleeps, policy).allocate("invoice", "10234")
    assert [r.getMessage() for r in caplog.records] == [
        f"POST /v1/allocations: ConnectionError: connection refused; retry 1/2 in "
        f"{sleeps[0]:.1f}s",
        f"POST /v1/allocations: HTTP 503; retry 2/2 in {sleeps[1]:.1f}s",
    ]


def test_the_last_connection_error_is_named_in_the_error(sleeps: Sleeps) -> None:
    def handler(request: requests.PreparedRequest) -> requests.Response:
        raise requests.ConnectionError("connection refused")

    with pytest.raises(CoordinatorUnreachable) as info:
        mock_client(handler, sleeps, RetryPolicy(attempts=1)).allocate("invoice", "1")
    assert str(info.value) == ("no answer from https://numbers.example after 1 attempt(s): "
                               "ConnectionError: connection refused")


def test_a_coordinator_that_never_answers_times_out(sleeps: Sleeps) -> None:
    """A coordinator that accepts the connection and then hangs must not hang the agent."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # never accepted, never answered
        client = Client(url=f"http://127.0.0.1:{server.getsockname()[1]}", token=TOKEN,
                        timeout=0.3, retry=RetryPolicy(attempts=1), sleep=sleeps)
        with pytest.raises(CoordinatorUnreachable, match=r"after 1 attempt\(s\): ReadTimeout"):
            client.allocate("invoice", "1")


def test_a_retry_policy_refuses_what_cannot_work_and_accepts_no_waits() -> None:
    """One attempt (never retry) and waits of zero are valid policies; the rest is refused."""
    assert RetryPolicy(attempts=1).attempts == 1
    zero = RetryPolicy(backoff=0, backoff_max=0, retry_after_max=0)
    assert zero.wait(3, random.Random(1)) == 0
    for fields, message in [({"attempts": 0}, "attempts must be >= 1"),
                            ({"backoff": -1}, "waits must be >= 0"),
                            ({"backoff_max": -1}, "waits must be >= 0"),
                            ({"retry_after_max": -1}, "waits must be >= 0")]:
        with pytest.raises(ValueError) as info:
            RetryPolicy(**fields)
        assert str(info.value) == message


def test_the_jitter_spans_the_whole_upper_half_of_each_step() -> None:
    """Equal jitter: half a step fixed, the other half random over all of it, so the longest
    wait is a whole step (agents that lost the coordinator together spread out)."""

    class Extremes(random.Random):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def random(self) -> float:
            return self.value

    policy = RetryPolicy(backoff=1, backoff_max=8)
    assert [policy.wait(n, Extremes(0.0)) for n in (1, 2, 5)] == [0.5, 1.0, 4.0]
    assert [policy.wait(n, Extremes(1.0)) for n in (1, 2, 5)] == [1.0, 2.0, 8.0]


def _batch_client(sleeps: Sleeps, answer=None) -> tuple[Client, list[requests.PreparedRequest]]:
    """A client whose coordinator numbers each asked item in order (or answers ``answer``)."""
    seen: list[requests.PreparedRequest] = []

    def handler(request: requests.PreparedRequest) -> requests.Response:
        seen.append(request)
        asked = json.loads(request.body)["items"]
        if answer is not None:
            return answer(asked)
        return mock_response(200, {"items": [
            {**ALLOCATION, "id": f"{item['document']}:2026:{n}", "number": n,
             "document": item["document"], "reference": item["reference"]}
            for n, item in enumerate(asked, 1)]})

    return mock_client(handler, sleeps), seen


def test_a_batch_takes_every_number_in_one_request_in_the_order_asked(sleeps: Sleeps) -> None:
    """The poller's page of numbers: one POST with every item (a date only where given), and
    the numbers come back in the order asked, each for its own document."""
    client, seen = _batch_client(sleeps)
    got = client.allocate_batch([("invoice", "7", dt.date(2026, 1, 2)), ("credit_note", 8, None),
                                 ("invoice", "9", "2026-03-04")])
    assert [(a.document, a.reference, a.number) for a in got] == [
        ("invoice", "7", 1), ("credit_note", "8", 2), ("invoice", "9", 3)]
    assert [(r.method, r.path_url, r.headers["Authorization"]) for r in seen] == [
        ("POST", "/v1/allocation-batches", f"Bearer {TOKEN}")]
    assert json.loads(seen[0].body) == {"items": [
        {"document": "invoice", "reference": "7", "date": "2026-01-02"},
        {"document": "credit_note", "reference": "8"},
        {"document": "invoice", "reference": "9", "date": "2026-03-04"}]}


def test_a_batch_of_1_to_1000_documents_is_sent_and_anything_else_is_refused_unsent(
    sleeps: Sleeps,
) -> None:
    """API.md's bounds of a batch, checked before anything is sent, as is each item."""
    client, seen = _batch_client(sleeps)
    for size in (0, 1001):
        with pytest.raises(ValueError) as info:
            client.allocate_batch([("invoice", str(n), None) for n in range(size)])
        assert str(info.value) == "a batch holds 1 to 1000 documents"
    with pytest.raises(ValueError) as info:
        client.allocate_batch([("invoice", "1", None), ("receipt", "2", None)])
    assert str(info.value) == "document must be one of invoice, credit_note, not 'receipt'"
    assert seen == []
    for size in (1, 1000):
        assert len(client.allocate_batch([("invoice", str(n), None) for n in range(size)])) == size
    assert len(seen) == 2


def test_a_refused_batch_is_the_coordinators_refusal_and_a_wrong_answer_takes_no_number(
    sleeps: Sleeps,
) -> None:
    """A refused batch (one item cannot be numbered) keeps the coordinator's message and the
    item's index; an answer that does not hold one number per item asked, in order, for the
    document asked, is refused: never write a number meant for another document."""
    refusal = {"code": 409, "status": "Conflict", "message": "Reference already allocated",
               "errors": {"json": {"items": {"1": ["Reference already allocated."]}}}}
    client, _ = _batch_client(sleeps, lambda asked: mock_response(409, refusal))
    with pytest.raises(CoordinatorRefused) as refused:
        client.allocate_batch([("invoice", "7", None), ("invoice", "8", None)])
    assert (refused.value.code, refused.value.errors) == (409, refusal["errors"])

    def numbered(asked: list[dict]) -> list[dict]:
        return [{**ALLOCATION, "document": i["document"], "reference": i["reference"]}
                for i in asked]

    wrong = {
        "a list": lambda asked: mock_response(200, numbered(asked)),
        "no items": lambda asked: mock_response(200, {"items": None}),
        "one fewer": lambda asked: mock_response(200, {"items": numbered(asked)[:-1]}),
        "one more": lambda asked: mock_response(200, {"items": numbered(asked) * 2}),
    }
    for shape, answer in wrong.items():
        client, _ = _batch_client(sleeps, answer)
        with pytest.raises(CoordinatorBadResponse) as info:
            client.allocate_batch([("invoice", "7", None), ("invoice", "8", None)])
        assert str(info.value) == "asked 2 numbers, the answer does not hold as many", shape
    client, _ = _batch_client(sleeps, lambda asked: mock_response(
        200, {"items": numbered(asked)[::-1]}))
    with pytest.raises(CoordinatorBadResponse) as info:
        client.allocate_batch([("invoice", "7", None), ("credit_note", "8", None)])
    assert str(info.value) == "asked a number for invoice '7', got one for credit_note '8'"


def test_whoami_names_the_tokens_system_and_refuses_an_answer_of_another_shape(
    sleeps: Sleeps,
) -> None:
    """`whoami` (the CLI's token check) asks with the token; a refusal is the coordinator's;
    an answer that names no kind of token is not taken for one."""
    seen: list[tuple[str, str, str]] = []
    answers = [mock_response(200, {"kind": "agent", "system": "blue"}),
               mock_response(401, {"code": 401, "status": "Unauthorized",
                                   "message": "Missing or invalid token", "errors": {}}),
               mock_response(200, ["agent"]), mock_response(200, {"kind": 1}),
               mock_response(200, {})]

    def handler(request: requests.PreparedRequest) -> requests.Response:
        seen.append((request.method, request.path_url, request.headers["Authorization"]))
        return answers.pop(0)

    client = mock_client(handler, sleeps)
    assert client.whoami() == {"kind": "agent", "system": "blue"}
    assert seen == [("GET", "/v1/whoami", f"Bearer {TOKEN}")]
    with pytest.raises(CoordinatorRefused) as refused:
        client.whoami()
    assert refused.value.code == 401
    for _ in range(3):
        with pytest.raises(CoordinatorBadResponse) as info:
            client.whoami()
        assert str(info.value) == "/v1/whoami answered JSON of the wrong shape"


def _status(whoami: requests.Response, probe: requests.Response | None, sleeps: Sleeps):
    """`status()` against a coordinator answering `whoami` and the old coordinators' probe."""
    asked: list[str] = []

    def handler(request: requests.PreparedRequest) -> requests.Response:
        asked.append(request.path_url)
        if request.path_url in ("/livez", "/readyz"):
            return mock_response(200, {"status": "ok"})
        return whoami if request.path_url == "/v1/whoami" else probe

    return mock_client(handler, sleeps).status(), asked[2:]


PROBED = ["/v1/whoami", "/v1/allocations/invoice:0:0"]


@pytest.mark.parametrize(
    ("whoami", "probe", "token", "asked"),
    [
        (mock_response(200, {"kind": "agent", "system": "blue"}), None, (True, "blue"),
         PROBED[:1]),
        (mock_response(200, {"kind": "admin"}), None, (True, None), PROBED[:1]),
        (mock_response(200, {"kind": "agent", "system": ["blue"]}), None, (True, None),
         PROBED[:1]),
        (mock_response(401, None), None, (False, None), PROBED[:1]),
        (mock_response(500, None), None, (None, None), PROBED[:1]),
        (mock_response(503, None), None, (None, None), PROBED[:1]),
        (mock_response(200, ["agent"]), mock_response(404, None), (True, None), PROBED),
        (mock_response(200, content=b"<html>Log in</html>"), mock_response(401, None),
         (False, None), PROBED),
        (mock_response(404, None), mock_response(404, None), (True, None), PROBED),
        (mock_response(404, None), mock_response(401, None), (False, None), PROBED),
        (mock_response(404, None), mock_response(500, None), (None, None), PROBED),
        (mock_response(404, None), mock_response(503, None), (None, None), PROBED),
    ],
    ids=["agent", "admin", "system-not-a-name", "refused", "500", "503", "whoami-not-a-dict",
         "whoami-not-json", "old-accepted", "old-refused", "old-500", "old-503"],
)
def test_status_checks_the_token_with_one_probe_and_names_its_system(
    whoami: requests.Response, probe: requests.Response | None, token: tuple, asked: list,
    sleeps: Sleeps,
) -> None:
    """`agent status`: `/v1/whoami` says whether the token is accepted and for which system;
    a coordinator older than it (404) or an answer of another shape is asked for an allocation
    that cannot exist (401: refused, 404: accepted); a failing coordinator leaves it unknown.
    A probe is one request, never retried."""
    status, seen = _status(whoami, probe, sleeps)
    assert (status.token_valid, status.system) == token
    assert (status.url, status.live, status.ready) == ("https://numbers.example", True, True)
    assert seen == asked
    assert sleeps == []


def test_status_of_a_coordinator_that_does_not_answer_is_one_attempt(sleeps: Sleeps) -> None:
    """The probe does not wait through the retry policy, and names what failed."""
    def handler(request: requests.PreparedRequest) -> requests.Response:
        raise requests.ConnectionError()

    with pytest.raises(CoordinatorUnreachable) as info:
        mock_client(handler, sleeps).status()
    assert str(info.value) == ("no answer from https://numbers.example after 1 attempt(s): "
                               "ConnectionError")
    assert sleeps == []


def test_the_clock_skew_counts_from_the_middle_of_the_probe_in_utc() -> None:
    """The Date header is compared with the midpoint of the request (it was made in between);
    a date without a zone (`-0000`) is UTC."""
    before = dt.datetime(2026, 11, 21, 10, 15, 0, tzinfo=dt.UTC)
    after = before + dt.timedelta(seconds=10)
    for header in ("Sat, 21 Nov 2026 10:15:12 GMT", "Sat, 21 Nov 2026 10:15:12 -0000"):
        assert _clock_skew(header, before, after) == dt.timedelta(seconds=7)


def test_settings_given_to_the_client_override_its_configuration(sleeps: Sleeps) -> None:
    """`Client(config, url=..., token=...)`: the explicit ones win; a transport answers plain
    http:// URLs as well as https://."""
    seen: list[tuple[str, str]] = []

    def handler(request: requests.PreparedRequest) -> requests.Response:
        seen.append((request.url, request.headers["Authorization"]))
        return mock_response(200, ALLOCATION)

    client = Client(Config(url="https://old.example", token="isg_old"), url="http://127.0.0.1:9",
                    token=TOKEN, transport=MockTransport(handler), retry=FAST, sleep=sleeps)
    client.get("invoice:2026:51")
    assert seen == [("http://127.0.0.1:9/v1/allocations/invoice:2026:51", f"Bearer {TOKEN}")]


def test_closing_the_client_releases_its_own_connections_but_not_a_session_passed_in() -> None:
    class Closing(MockTransport):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    def handler(request: requests.PreparedRequest) -> requests.Response:
        return mock_response(200, ALLOCATION)

    own = Closing(handler)
    with Client(url="https://numbers.example", token=TOKEN, transport=own):
        pass
    assert own.closed > 0
    passed = Closing(handler)
    session = requests.Session()
    session.mount("https://", passed)
    with Client(url="https://numbers.example", token=TOKEN, session=session) as client:
        assert client.get("invoice:2026:51").id == "invoice:2026:51"
    assert passed.closed == 0
