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
    │                               invalid request (400/422); carries the coordinator's
    │                               ``{code, status, message, errors}``; retrying will not help
    ├── JournalError                the local journal refused a change (impossible state
    │                               transition, unknown entry) or could not be opened
    └── WhmcsError                  talking to this installation's WHMCS failed (see _whmcs.py)

Unreachable, Unavailable and BadResponse all mean "try again later with the same reference":
the coordinator answers a replay with the allocation it already made, so a retry can never
burn a second number.

Every message says what the operator must fix, never contains a token or secret.
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
    """The coordinator answered 4xx; the request must change before it can succeed."""


class JournalError(AgentError):
    """The local journal refused a change or could not be opened."""
