"""The coordinator client: contract, retries that cannot burn numbers, failing closed."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import socket

import pytest
import requests

from agent import (
    Allocation,
    Client,
    CoordinatorBadResponse,
    CoordinatorRefused,
    CoordinatorUnavailable,
    CoordinatorUnreachable,
    MockTransport,
    RetryPolicy,
    mock_response,
)

from .conftest import FAST, TOKEN, FakeCoordinator, Sleeps

ALLOCATION = {
    "id": "invoice:2026:51",
    "number": 51,
    "formatted": "INV-2026-000051",
    "sequence": "invoice",
    "period": "2026",
    "system": "blue",
    "document": "invoice",
    "reference": "10234",
    "status": "issued",
    "issued_at": "2026-11-21T10:15:02Z",
}


def mock_client(handler, sleeps: Sleeps, retry: RetryPolicy = FAST) -> Client:
    return Client(
        url="https://numbers.example",
        token=TOKEN,
        retry=retry,
        sleep=sleeps,
        transport=MockTransport(handler),
        rng=random.Random(7),
    )


# -- against the loopback fake coordinator --------------------------------------------------


def test_allocate_returns_a_typed_allocation(client: Client) -> None:
    allocation = client.allocate("invoice", "10234", date=dt.date(2026, 11, 21))
    assert isinstance(allocation, Allocation)
    assert allocation.formatted == "INV-2026-000001"
    assert (allocation.document, allocation.reference, allocation.period) == (
        "invoice",
        "10234",
        "2026",
    )
    assert allocation.issued_at.tzinfo is not None
    with pytest.raises(AttributeError):
        allocation.number = 2  # type: ignore[misc]


def test_same_reference_gets_the_same_number(client: Client) -> None:
    first = client.allocate("invoice", "1", date="2026-01-02")
    again = client.allocate("invoice", "1", date="2026-01-02")
    other = client.allocate("invoice", "2", date="2026-01-02")
    assert again == first
    assert other.number == first.number + 1


def test_retry_after_503_resends_the_same_request_and_takes_one_number(
    coordinator: FakeCoordinator, client: Client, sleeps: Sleeps
) -> None:
    coordinator.fail_next = [503, 503]
    allocation = client.allocate("credit_note", "77", date="2026-03-01")
    bodies = coordinator.posts("/v1/allocations")
    assert len(bodies) == 3
    assert (
        bodies[0]
        == bodies[1]
        == bodies[2]
        == {
            "document": "credit_note",
            "reference": "77",
            "date": "2026-03-01",
        }
    )
    assert len(sleeps) == 2
    assert allocation.number == 1
    assert coordinator.counters[("credit_note", "2026")] == 1


def test_503_after_every_retry_is_unavailable(coordinator: FakeCoordinator, client: Client) -> None:
    coordinator.fail_next = [503] * FAST.attempts
    with pytest.raises(CoordinatorUnavailable) as info:
        client.allocate("invoice", "5")
    assert info.value.code == 503
    assert "injected failure" in info.value.message
    assert coordinator.allocations == {}


def test_confirm_void_and_get(client: Client) -> None:
    a = client.allocate("invoice", "9", date="2026-05-05")
    assert client.confirm(a.id, a.formatted).status == "confirmed"
    b = client.allocate("invoice", "10", date="2026-05-05")
    assert client.void(b.id, "invoice deleted before sending").status == "void"
    assert client.get(a.id).status == "confirmed"


def test_refusals_carry_the_coordinator_error(client: Client) -> None:
    client.allocate("invoice", "11", date="2026-05-05")
    with pytest.raises(CoordinatorRefused) as info:
        client.allocate("invoice", "11", date="2027-05-05")
    assert info.value.code == 409
    assert info.value.to_json()["status"] == "Conflict"
    with pytest.raises(CoordinatorRefused) as info:
        client.get("invoice:2026:999")
    assert info.value.code == 404


def test_bad_token_is_refused_and_not_retried(coordinator: FakeCoordinator, sleeps: Sleeps) -> None:
    with Client(url=coordinator.url, token="wrong", retry=FAST, sleep=sleeps) as bad:
        with pytest.raises(CoordinatorRefused) as info:
            bad.allocate("invoice", "1")
    assert info.value.code == 401
    assert "wrong" not in str(info.value)
    assert sleeps == []


def test_invalid_arguments_send_nothing(coordinator: FakeCoordinator, client: Client) -> None:
    for args in [
        ("receipt", "1"),
        ("invoice", ""),
        ("invoice", "x" * 129),
        ("invoice", "a\nb"),
        ("invoice", " 1"),
    ]:
        with pytest.raises(ValueError):
            client.allocate(*args)
    with pytest.raises(ValueError):
        client.allocate("invoice", "1", date="21.11.2026")
    with pytest.raises(ValueError):
        client.void("invoice:2026:1", " ")
    with pytest.raises(ValueError):
        client.confirm("../admin", "X")
    assert coordinator.requests == []


def test_status_reports_live_ready_token_and_skew(
    coordinator: FakeCoordinator, client: Client
) -> None:
    status = client.status()
    assert (status.live, status.ready, status.token_valid) == (True, True, True)
    assert status.clock_skew is not None and abs(status.clock_skew) <= dt.timedelta(seconds=5)
    assert status.ok
    coordinator.ready = False
    assert not client.status().ready
    assert "not ready" in client.status().problems[0]


def test_status_with_a_bad_token(coordinator: FakeCoordinator) -> None:
    with Client(url=coordinator.url, token="wrong") as bad:
        status = bad.status()
    assert status.token_valid is False
    assert not status.ok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_is_unreachable_after_retries(sleeps: Sleeps) -> None:
    with Client(url=f"http://127.0.0.1:{free_port()}", token=TOKEN, retry=FAST, sleep=sleeps) as c:
        with pytest.raises(CoordinatorUnreachable) as info:
            c.allocate("invoice", "1")
    assert len(sleeps) == FAST.attempts - 1
    assert info.value.code is None
    assert TOKEN not in str(info.value)


# -- through the transport seam ---------------------------------------------------------------


def test_timeouts_then_success_resend_identical_bytes(sleeps: Sleeps) -> None:
    seen: list[bytes] = []

    def handler(request: requests.PreparedRequest) -> requests.Response:
        seen.append(request.body)
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        if len(seen) < 3:
            raise requests.ReadTimeout("read timed out")
        return mock_response(200, ALLOCATION)

    allocation = mock_client(handler, sleeps).allocate("invoice", "10234", "2026-11-21")
    assert allocation.id == "invoice:2026:51"
    assert len(set(seen)) == 1 and len(seen) == 3
    assert json.loads(seen[0])["reference"] == "10234"


def test_unreachable_raises_and_never_returns_a_number(sleeps: Sleeps) -> None:
    def handler(request: requests.PreparedRequest) -> requests.Response:
        raise requests.ConnectionError("connection refused")

    with pytest.raises(CoordinatorUnreachable, match="after 4 attempt"):
        mock_client(handler, sleeps).allocate("invoice", "1")
    assert len(sleeps) == 3


def test_tls_failure_is_not_retried(sleeps: Sleeps) -> None:
    def handler(request: requests.PreparedRequest) -> requests.Response:
        raise requests.exceptions.SSLError("certificate verify failed")

    with pytest.raises(CoordinatorUnreachable, match="ca_bundle"):
        mock_client(handler, sleeps).allocate("invoice", "1")
    assert sleeps == []


def test_429_honours_retry_after(sleeps: Sleeps) -> None:
    answers = [mock_response(429, {"code": 429}, headers={"Retry-After": "7"})]

    def handler(request: requests.PreparedRequest) -> requests.Response:
        return answers.pop(0) if answers else mock_response(201, ALLOCATION)

    policy = RetryPolicy(attempts=3, backoff=0.01, backoff_max=0.01, retry_after_max=60)
    mock_client(handler, sleeps, policy).allocate("invoice", "10234")
    assert sleeps == [7.0]


def test_retry_after_as_http_date_is_capped(sleeps: Sleeps) -> None:
    later = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), True)
    answers = [mock_response(503, None, headers={"Retry-After": later})]

    def handler(request: requests.PreparedRequest) -> requests.Response:
        return answers.pop(0) if answers else mock_response(201, ALLOCATION)

    policy = RetryPolicy(attempts=2, backoff=0.01, backoff_max=0.01, retry_after_max=5)
    mock_client(handler, sleeps, policy).allocate("invoice", "10234")
    assert sleeps == [5]


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(backoff=1, backoff_max=8)
    rng = random.Random(1)
    for n, step in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        wait = policy.wait(n, rng)
        assert step / 2 <= wait <= step


@pytest.mark.parametrize(
    "response",
    [
        mock_response(
            200, content=b"<html>Please log in</html>", headers={"Content-Type": "text/html"}
        ),
        mock_response(200, {"id": "invoice:2026:51"}),
        mock_response(200, {**ALLOCATION, "number": "51"}),
        mock_response(200, {**ALLOCATION, "reference": "other"}),
        mock_response(302, None, headers={"Location": "https://login.example"}),
    ],
    ids=["html", "missing-fields", "string-number", "other-reference", "redirect"],
)
def test_garbage_is_a_bad_response(response: requests.Response, sleeps: Sleeps) -> None:
    with pytest.raises(CoordinatorBadResponse):
        mock_client(lambda request: response, sleeps).allocate("invoice", "10234")


def test_allocation_keeps_unknown_fields_for_json() -> None:
    allocation = Allocation.from_json({**ALLOCATION, "new_field": 1})
    assert allocation.to_json()["new_field"] == 1
    assert Allocation.from_json(ALLOCATION).to_json() == ALLOCATION
