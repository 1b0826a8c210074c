"""Guards of the agent's coordinator client that the mutation run (issue 17) found without a
test."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import socket

import pytest
import requests

from agent import (
    Client,
    CoordinatorBadResponse,
    CoordinatorRefused,
    CoordinatorUnavailable,
    CoordinatorUnreachable,
    RetryPolicy,
    mock_response,
)
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
