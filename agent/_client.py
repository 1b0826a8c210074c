"""The coordinator client: take, confirm and void numbers; fail closed, retry safely."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import json as jsonlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests
import requests.auth
from requests.adapters import BaseAdapter

from agent._config import Config
from agent._exceptions import (
    CoordinatorBadResponse,
    CoordinatorError,
    CoordinatorRefused,
    CoordinatorUnavailable,
    CoordinatorUnreachable,
)
from agent._models import DOCUMENTS, Allocation, Status

log = logging.getLogger("agent")

USER_AGENT = "invoice-sync-agent/0.1"


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How the client retries: exponential backoff with jitter, same request every time.

    ::

        client = Client(config, retry=RetryPolicy(attempts=8, backoff_max=60))

    Retried: connection errors, timeouts, and the statuses in ``statuses`` (429 honours
    ``Retry-After``). Every allocation request is idempotent on the coordinator side (same
    system, document and reference → the same number, 200 on replay), and the client resends
    the byte-identical body, so a retry never burns a second number.

    Attributes:
        attempts: Total tries, the first included (1 = never retry).
        backoff: The wait before the first retry, in seconds; doubles each time.
        backoff_max: The cap of the exponential wait.
        retry_after_max: The cap of a coordinator-requested ``Retry-After`` wait.
        statuses: HTTP statuses worth another try.
    """

    attempts: int = 5
    backoff: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.backoff < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ValueError("waits must be >= 0")

    def wait(self, retry_number: int, rng: random.Random) -> float:
        """Return seconds to wait before retry ``retry_number`` (1-based): "equal jitter".

        Half the exponential step is fixed (so waits really grow), half is random (so many
        agents that lost the coordinator together do not come back in lock step).
        """
        step = min(self.backoff_max, self.backoff * 2 ** (retry_number - 1))
        return step / 2 + rng.uniform(0, step / 2)


PROBE = RetryPolicy(attempts=1, statuses=frozenset())
"""Try once and hand back any HTTP answer (``status()`` reports a 503, it does not raise)."""


class Client:
    """Talk to the coordinator's numbering API (API.md, "Numbering").

    ::

        with Client(Config.load()) as client:
            allocation = client.allocate("invoice", "10234", date=datetime.date(2026, 11, 21))
            write_into_whmcs(allocation.formatted)
            client.confirm(allocation.id, allocation.formatted)

        client = Client(url="https://numbers.example.com", token="…")

    Fails closed: every method returns what the coordinator acknowledged or raises a
    :class:`~agent.CoordinatorError`; no number is ever made up locally.

    Args:
        config: The agent configuration; ``url``/``token``/``timeout``/``ca_bundle`` override it.
        retry: The retry policy (:class:`RetryPolicy` defaults when omitted).
        transport: A requests adapter answering instead of the network (tests:
            :class:`~agent.MockTransport`).
        session: A ``requests.Session`` to use (the caller closes it).
        sleep: Called with the seconds to wait between retries (tests pass a recorder).
        rng: The random source for jitter.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        ca_bundle: str | None = None,
        retry: RetryPolicy | None = None,
        transport: BaseAdapter | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        overrides = {
            k: v
            for k, v in {
                "url": url,
                "token": token,
                "timeout": timeout,
                "ca_bundle": ca_bundle,
            }.items()
            if v is not None
        }
        config = dataclasses.replace(config, **overrides) if config else Config(**overrides)
        config.require("url", "token")
        self.config = config
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._owns_session = session is None
        self._session = session or requests.Session()
        if transport is not None:
            self._session.mount("http://", transport)
            self._session.mount("https://", transport)

    def __repr__(self) -> str:
        return f"Client(url={self.config.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool (unless the session was passed in)."""
        if self._owns_session:
            self._session.close()

    # -- numbering -------------------------------------------------------------------------

    def allocate(
        self, document: str, reference: str | int, date: dt.date | str | None = None
    ) -> Allocation:
        """Take the number for one WHMCS document; the same reference always gets the same one.

        Args:
            document: ``"invoice"`` or ``"credit_note"``.
            reference: The document's id in this WHMCS (1–128 printable characters).
            date: The document date (picks the period of yearly/monthly sequences);
                the coordinator's today when omitted.

        Raises:
            ValueError: Invalid arguments (nothing was sent).
            CoordinatorError: No number was obtained (see the hierarchy in agent._exceptions).
        """
        body: dict[str, Any] = {
            "document": check_document(document),
            "reference": check_reference(reference),
        }
        if date is not None:
            body["date"] = check_date(date).isoformat()
        allocation = self._allocation("POST", "/v1/allocations", body, expect=(200, 201))
        if (allocation.document, allocation.reference) != (body["document"], body["reference"]):
            # Never write a number meant for another document into this one.
            raise CoordinatorBadResponse(
                f"asked a number for {body['document']} {body['reference']!r}, got one for "
                f"{allocation.document} {allocation.reference!r}"
            )
        return allocation

    def confirm(self, allocation_id: str, invoicenum: str) -> Allocation:
        """Tell the coordinator the number is now written in WHMCS (status ``confirmed``)."""
        if not isinstance(invoicenum, str) or not invoicenum.strip():
            raise ValueError("invoicenum must be the non-empty number written into WHMCS")
        return self._by_id("POST", allocation_id, "/confirm", {"invoicenum": invoicenum})

    def void(self, allocation_id: str, reason: str) -> Allocation:
        """Give up a number with a reason the auditor can read (status ``void``)."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("a void needs a reason (the ledger keeps it for the auditor)")
        return self._by_id("POST", allocation_id, "/void", {"reason": reason})

    def get(self, allocation_id: str) -> Allocation:
        """Return one allocation of this system."""
        return self._by_id("GET", allocation_id, "", None)

    def status(self) -> Status:
        """Probe the coordinator once: live, ready, token accepted, clock skew.

        Raises:
            CoordinatorUnreachable: The coordinator did not answer at all.
        """
        before = dt.datetime.now(dt.UTC)
        live = self._request("GET", "/livez", None, auth=False, retry=PROBE)
        after = dt.datetime.now(dt.UTC)
        ready = self._request("GET", "/readyz", None, auth=False, retry=PROBE)
        token_valid, system = self._check_token()
        return Status(
            url=self.config.url or "",
            live=live.ok,
            ready=ready.ok,
            token_valid=token_valid,
            clock_skew=_clock_skew(live.headers.get("Date"), before, after),
            system=system,
        )

    def whoami(self) -> dict[str, Any]:
        """Return who the token is, ``{"kind": "agent", "system": "blue"}`` (``GET /v1/whoami``).

        Raises:
            CoordinatorRefused: The token is refused (401), or the coordinator predates
                ``/v1/whoami`` (404).
            CoordinatorError: No answer (after retries).
        """
        response = self._request("GET", "/v1/whoami", None)
        if response.status_code != 200:
            raise _error_from(response)
        data = _json_body(response)
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise CoordinatorBadResponse("/v1/whoami answered JSON of the wrong shape")
        return data

    def _check_token(self) -> tuple[bool | None, str | None]:
        """Return (token accepted?, its system) with one probe; nothing is written."""
        response = self._request("GET", "/v1/whoami", None, retry=PROBE)
        if response.status_code == 401:
            return False, None
        if response.status_code == 200:
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("kind"), str):
                system = data.get("system")
                return True, system if isinstance(system, str) else None
        if response.status_code >= 500:
            return None, None
        # A coordinator older than /v1/whoami (404) or a proxy in the way: ask for an
        # allocation that cannot exist. 401 means the token is bad; 404 (or 403/400) means it
        # was accepted.
        probe = self._request("GET", "/v1/allocations/invoice:0:0", None, retry=PROBE)
        if probe.status_code == 401:
            return False, None
        if probe.status_code >= 500:
            return None, None
        return True, None

    # -- plumbing --------------------------------------------------------------------------

    def _by_id(self, method: str, allocation_id: str, suffix: str, body: Any) -> Allocation:
        # Ids of a series other than default hold one "/" (``acme/invoice:2026:5``): it is
        # sent encoded (%2F), so the id stays one path segment to every proxy on the way.
        parts = allocation_id.split("/") if isinstance(allocation_id, str) else []
        if not 1 <= len(parts) <= 2 or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not an allocation id: {allocation_id!r}")
        path = f"/v1/allocations/{quote(allocation_id, safe=':')}{suffix}"
        allocation = self._allocation(method, path, body, expect=(200,))
        if allocation.id != allocation_id:
            raise CoordinatorBadResponse(
                f"asked about allocation {allocation_id!r}, got {allocation.id!r}"
            )
        return allocation

    def _allocation(
        self, method: str, path: str, body: Any, *, expect: tuple[int, ...]
    ) -> Allocation:
        response = self._request(method, path, body)
        if response.status_code not in expect:
            raise _error_from(response)
        allocation = Allocation.from_json(_json_body(response))
        if 201 in expect:  # taking a number: 200 is a replay of one issued before, 201 new
            allocation = dataclasses.replace(allocation, replay=response.status_code == 200)
        return allocation

    def _request(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        auth: bool = True,
        retry: RetryPolicy | None = None,
    ) -> requests.Response:
        """Send one request, retrying per policy; return the final non-retryable response.

        The body is serialised once, so every attempt sends the very same bytes.
        """
        policy = retry or self.retry
        url = f"{self.config.url}{path}"
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            data = jsonlib.dumps(body, separators=(",", ":"), sort_keys=True).encode()
            headers["Content-Type"] = "application/json"
        verify: bool | str = str(self.config.ca_bundle) if self.config.ca_bundle else True
        for attempt in range(1, policy.attempts + 1):
            last = attempt == policy.attempts
            try:
                response = self._session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    # Passing auth explicitly also keeps requests from using ~/.netrc instead.
                    auth=_BearerAuth(self.config.token or "") if auth else None,
                    timeout=(self.config.timeout, self.config.timeout),
                    verify=verify,
                    # A redirected POST may turn into a GET; treat redirects as a bad answer.
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError as exc:
                # A certificate problem does not heal by waiting.
                raise CoordinatorUnreachable(
                    f"TLS verification of {self.config.url} failed ({_brief(exc)}); "
                    "check the certificate or set ca_bundle"
                ) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last:
                    raise CoordinatorUnreachable(
                        f"no answer from {self.config.url} after {attempt} attempt(s): "
                        f"{_brief(exc)}"
                    ) from None
                wait = policy.wait(attempt, self._rng)
                log.warning(
                    "%s %s: %s; retry %d/%d in %.1fs",
                    method,
                    path,
                    _brief(exc),
                    attempt,
                    policy.attempts - 1,
                    wait,
                )
                self._sleep(wait)
                continue
            if response.status_code not in policy.statuses:
                return response
            if last:
                error = _error_from(response, CoordinatorUnavailable)
                error.message = f"{error.message} (after {attempt} attempt(s))"
                error.args = (error.message,)
                raise error
            wait = policy.wait(attempt, self._rng)
            retry_after = _retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                wait = max(wait, min(retry_after, policy.retry_after_max))
            log.warning(
                "%s %s: HTTP %d; retry %d/%d in %.1fs",
                method,
                path,
                response.status_code,
                attempt,
                policy.attempts - 1,
                wait,
            )
            response.close()
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class _BearerAuth(requests.auth.AuthBase):
    """Add the agent token; its repr never shows it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


def check_document(document: str) -> str:
    """Return ``document`` if the coordinator numbers it, else raise ValueError."""
    if document not in DOCUMENTS:
        raise ValueError(f"document must be one of {', '.join(DOCUMENTS)}, not {document!r}")
    return document


def check_reference(reference: str | int) -> str:
    """Return the reference as the string the contract wants (1–128 printable characters)."""
    if isinstance(reference, bool) or not isinstance(reference, str | int):
        raise ValueError(f"reference must be a string, not {type(reference).__name__}")
    text = str(reference)
    if not 1 <= len(text) <= 128 or not text.isprintable() or text != text.strip():
        raise ValueError("reference must be 1-128 printable characters without outer spaces")
    return text


def check_date(value: dt.date | str) -> dt.date:
    """Return the document date from a ``date`` or a ``YYYY-MM-DD`` string."""
    if isinstance(value, dt.datetime):
        raise ValueError("date must be a calendar date (YYYY-MM-DD), not a datetime")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"date must be YYYY-MM-DD, not {value!r}")


def _json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        raise CoordinatorBadResponse(
            f"HTTP {response.status_code} from {response.url} is not JSON ({kind}); "
            "is a proxy or login page in the way?",
            code=response.status_code,
            status=response.reason,
        ) from None


def _error_from(
    response: requests.Response, cls: type[CoordinatorError] | None = None
) -> CoordinatorError:
    """Turn a non-success response into the matching typed error, keeping the JSON error."""
    code = response.status_code
    if cls is None:
        # A 500 is the coordinator saying something is broken (a bug, damaged data), as opposed
        # to 503 "try again": the same request would fail for ever, so it is refused, not retried.
        if 400 <= code <= 500:
            cls = CoordinatorRefused
        elif code >= 500:
            cls = CoordinatorUnavailable
        else:  # 1xx/3xx/unexpected 2xx
            cls = CoordinatorBadResponse
    message = f"HTTP {code} {response.reason or ''}".strip()
    errors: dict[str, Any] = {}
    status = response.reason
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("message"), str) and data["message"]:
            message = f"{data['message']} (HTTP {code})"
        if isinstance(data.get("errors"), dict):
            errors = data["errors"]
        if isinstance(data.get("status"), str):
            status = data["status"]
    return cls(message, code=code, status=status, errors=errors)


def _retry_after(value: str | None) -> float | None:
    """Parse ``Retry-After`` (seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _clock_skew(
    date_header: str | None, before: dt.datetime, after: dt.datetime
) -> dt.timedelta | None:
    if not date_header:
        return None
    try:
        server = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    if server.tzinfo is None:
        server = server.replace(tzinfo=dt.UTC)
    # The header is truncated to the second: compare with the request's midpoint, whole seconds.
    local = before + (after - before) / 2
    return dt.timedelta(seconds=round((server - local).total_seconds()))


def _brief(exc: BaseException) -> str:
    """Name a network error briefly (requests' messages nest urllib3 reprs several deep)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
