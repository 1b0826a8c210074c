"""Exceptions raised by the invoice-sync agent.

The hierarchy, in one place::

    AgentError                      root: catch this to catch everything the agent raises
    ├── ConfigError                 the agent's own configuration is missing or invalid
    ├── CoordinatorError            talking to the coordinator failed (see _client.py);
    │   │                           no number was obtained, none may be guessed locally
    │   ├── CoordinatorUnreachable  no answer at all: connection refused/reset, DNS, TLS,
    │   │                           timeouts, still so after every retry
    │   ├── CoordinatorUnavailable  an answer, but "not now": 5xx (503 = durability could not
    │   │                           be confirmed) or 429, still so after every retry
    │   ├── CoordinatorBadResponse  an answer the agent cannot understand (HTML from a proxy,
    │   │                           JSON of the wrong shape)
    │   └── CoordinatorRefused      a 4xx: bad token (401), wrong scope (403), unknown
    │                               allocation (404), reference taken with another date (409),
    │                               invalid request (400/422); or a 500: the coordinator is
    │                               broken until an operator acts; carries the coordinator's
    │                               ``{code, status, message, errors}``; retrying will not help
    ├── JournalError                the local journal refused a change (impossible state
    │                               transition, unknown entry) or could not be opened
    ├── NumberWentBackwards         the coordinator answered a number at or below one this
    │                               installation already received for another document
    ├── PollerBusy                  another poller of this installation holds the poll lock
    └── WhmcsError                  talking to this installation's WHMCS failed (see _whmcs.py)
        ├── WhmcsAccessDeniedError  HTTP 403: an admin must change a WHMCS setting
        │   ├── WhmcsAuthError          wrong API identifier/secret
        │   ├── WhmcsPermissionError    the API role lacks the action (``.action``)
        │   ├── WhmcsIpNotAllowedError  caller IP not in API IP Access Restriction (``.ip``)
        │   ├── WhmcsAccessKeyError     wrong or missing ``accesskey``
        │   └── WhmcsIpBannedError      the caller's IP is banned in WHMCS
        ├── WhmcsConnectionError    WHMCS could not be reached (DNS, refused, reset)
        │   └── WhmcsTimeoutError       WHMCS did not answer in time
        ├── WhmcsTlsError           the TLS handshake or certificate check failed
        ├── WhmcsBadResponseError   the answer was not WHMCS's JSON (firewall page, HTTP 5xx)
        └── WhmcsApiError           WHMCS ran the action and reported an error (HTTP 200)
            └── WhmcsInvoiceNotFoundError  exactly GetInvoice's answer for a missing invoice

Unreachable, Unavailable and BadResponse all mean "try again later with the same reference":
the coordinator answers a replay with the allocation it already made, so a retry can never
burn a second number.

Every message says what the operator must fix, never contains a token or secret. Every
``WhmcsError`` has a short stable ``code`` (``"whmcs_auth"``…) that the coordinator stores in
its warnings, so dashboards can group by cause without parsing English.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AgentError(Exception):
    """Root of every error the agent raises."""


class ConfigError(AgentError):
    """The agent's configuration is missing a value or has an invalid one."""


class CoordinatorError(AgentError):
    """Talking to the coordinator failed; no number was obtained.

    Attributes:
        code: The HTTP status code when the coordinator answered, else ``None``.
        status: The HTTP reason phrase (e.g. ``"Conflict"``), else ``None``.
        message: A human-readable explanation (never contains the token).
        errors: The coordinator's field errors, e.g. ``{"json": {"date": ["…"]}}``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: str | None = None,
        errors: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.errors: dict[str, Any] = dict(errors or {})

    def to_json(self) -> dict[str, Any]:
        """Return the error in the project's one shape: ``{code, status, message, errors}``."""
        return {
            "code": self.code,
            "status": self.status,
            "message": self.message,
            "errors": self.errors,
        }


class CoordinatorUnreachable(CoordinatorError):
    """No answer from the coordinator (connection, DNS, TLS, timeout) after every retry."""


class CoordinatorUnavailable(CoordinatorError):
    """The coordinator answered 5xx or 429 after every retry; try again later."""


class CoordinatorBadResponse(CoordinatorError):
    """The coordinator (or something in front of it) answered what the agent cannot parse."""


class CoordinatorRefused(CoordinatorError):
    """The coordinator answered 4xx, or 500 (broken): retrying the same request cannot help."""


class JournalError(AgentError):
    """The local journal refused a change or could not be opened."""


class NumberWentBackwards(AgentError):
    """The coordinator handed out a number this installation must not write (fail closed).

    The journal remembers the highest number received per sequence and period; a new number
    (not a replay) at or below it, for another document, means the coordinator numbers from
    lost or old data (an old backup restored, an empty store): the number may already be
    printed on one of our invoices. It is not written anywhere; an admin must raise the
    sequence's ``next_number`` past ``highest``.

    Attributes:
        number: The number just received (formatted in ``formatted``).
        highest: The highest number received before, for ``highest_reference``.
    """

    def __init__(
        self, message: str, *, number: int, formatted: str, highest: int,
        highest_formatted: str, highest_reference: str,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.number = number
        self.formatted = formatted
        self.highest = highest
        self.highest_formatted = highest_formatted
        self.highest_reference = highest_reference


class PollerBusy(AgentError):
    """Another ``invoice-sync-agent poll`` of this installation is running (it holds the lock)."""


class WhmcsError(AgentError):
    """Talking to a WHMCS installation failed.

    Attributes:
        code: Short stable identifier of the cause, stored by the coordinator in warnings.
        action: The WHMCS API action being called (``"GetInvoices"``), if known.
        status_code: The HTTP status WHMCS (or whatever stood in front of it) answered, if any.
    """

    code = "whmcs"

    def __init__(
        self, message: str, *, action: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.action = action
        self.status_code = status_code


class WhmcsAccessDeniedError(WhmcsError):
    """WHMCS refused the API call; an administrator has to change a setting.

    Attributes:
        whmcs_message: WHMCS's own message, verbatim (e.g. ``Invalid Permissions: API action
            "updateinvoice" is not allowed``), so callers can match WHMCS's exact answers.
    """

    code = "whmcs_access_denied"

    def __init__(self, message: str, *, whmcs_message: str = "", **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.whmcs_message = whmcs_message


class WhmcsAuthError(WhmcsAccessDeniedError):
    """The API identifier or secret is wrong, or the credential was deleted."""

    code = "whmcs_auth"


class WhmcsPermissionError(WhmcsAccessDeniedError):
    """The API role tied to the credentials does not allow the action (see ``.action``)."""

    code = "whmcs_permission"


class WhmcsIpNotAllowedError(WhmcsAccessDeniedError):
    """The caller's IP is not in WHMCS's API IP Access Restriction list.

    Attributes:
        ip: The address WHMCS saw, which is what must be added (it may be a proxy's or NAT's).
    """

    code = "whmcs_ip_not_allowed"

    def __init__(self, message: str, *, ip: str | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.ip = ip


class WhmcsAccessKeyError(WhmcsAccessDeniedError):
    """The ``accesskey`` is wrong or missing while WHMCS requires it."""

    code = "whmcs_access_key"


class WhmcsIpBannedError(WhmcsAccessDeniedError):
    """WHMCS has banned the caller's IP (usually after repeated failed logins)."""

    code = "whmcs_ip_banned"


class WhmcsConnectionError(WhmcsError):
    """WHMCS could not be reached or dropped the connection."""

    code = "whmcs_connection"


class WhmcsTimeoutError(WhmcsConnectionError):
    """WHMCS did not connect or answer within the timeout."""

    # A subclass of WhmcsConnectionError because callers treat both as "try again later".
    code = "whmcs_timeout"


class WhmcsTlsError(WhmcsError):
    """The TLS connection to WHMCS failed (certificate invalid, or not HTTPS at all)."""

    # Not a WhmcsConnectionError: retrying does not help, someone must fix a certificate or URL.
    code = "whmcs_tls"


class WhmcsBadResponseError(WhmcsError):
    """The answer was not WHMCS API JSON (an HTML firewall page, an HTTP 5xx, garbage).

    Attributes:
        snippet: The first characters of the body, whitespace collapsed, for the admin to recognise.
    """

    code = "whmcs_bad_response"

    def __init__(self, message: str, *, snippet: str = "", **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.snippet = snippet


class WhmcsApiError(WhmcsError):
    """WHMCS ran the action and answered ``result=error`` (for example an unknown invoice id).

    Attributes:
        whmcs_message: WHMCS's own message, verbatim.
    """

    code = "whmcs_api"

    def __init__(self, message: str, *, whmcs_message: str = "", **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.whmcs_message = whmcs_message


class WhmcsInvoiceNotFoundError(WhmcsApiError):
    """WHMCS answered exactly ``{"status": "error", "message": "Invoice ID Not Found"}``.

    GetInvoice's answer for an invoice that does not exist (deleted): note ``status``, not
    ``result``. Only this answer may be read as "deleted"; any other error, a ``Command Not
    Found`` from a module or proxy included, is a :class:`WhmcsApiError`.
    """

    code = "whmcs_invoice_not_found"
