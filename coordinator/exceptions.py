"""Errors the coordinator's domain raises. HTTP knows them only through ``errors.py``.

    CoordinatorError              root
    ├── InvalidInput              a value is well-formed JSON but not acceptable (422)
    │   └── UnsafeURL             a WHMCS URL points where the coordinator must not fetch
    ├── NotFound                  no such sequence, allocation, system, sync, warning (404)
    ├── Conflict                  the request contradicts what is stored (409)
    │   └── BackupRefused         a restore/backup that cannot be done as asked (nothing done)
    ├── AuthError                 missing or unknown token (401)
    │   └── Forbidden             valid token, wrong scope (403)
    ├── RateLimited               too many requests for this token (429)
    ├── SecretUnreadable          a stored secret no configured key decrypts (500)
    ├── InternalFault             something is broken (a bug, damaged data): retrying will
    │                             not help, an operator must look (500, raises a warning)
    └── ServiceUnavailable        Redis down or a write not confirmed durable (503)
        ├── NotDurable
        ├── NumberingNotInitialised  an empty store never set explicitly does not number
        ├── NumberingBehind       a WHMCS shows a number above the counter of the period
        ├── RecoveryIncomplete    ``recover`` could not read a WHMCS or journal (nothing done)
        └── SecretsNotConfigured  no (valid) INVOICE_SYNC_SECRET_KEYS to encrypt with
"""

from __future__ import annotations

from typing import Any


class CoordinatorError(Exception):
    """Root of every domain error; carries a message safe to show and optional field errors."""

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class InvalidInput(CoordinatorError):
    """A value parsed fine but cannot be accepted (e.g. a number past the padding width)."""


class UnsafeURL(InvalidInput):
    """A WHMCS URL is not https, or points at loopback, link-local, private or metadata hosts.

    Raised at registration (422) and again right before each fetch, so a name that resolved
    to a public address when registered cannot be re-pointed inside the network later.
    """


class NotFound(CoordinatorError):
    """The thing asked for does not exist."""


class Conflict(CoordinatorError):
    """The request contradicts stored state (lowering next_number, a sync already running)."""


class BackupRefused(Conflict):
    """A backup or restore cannot be done as asked (a non-empty store, a damaged file, an
    older server); nothing was changed."""


class AuthError(CoordinatorError):
    """No token, or a token the coordinator does not know."""


class Forbidden(AuthError):
    """A valid token used outside its scope (an agent acting for another system or as admin)."""


class SecretUnreadable(CoordinatorError):
    """A stored secret cannot be decrypted with any configured key (a key removed too early).

    Deliberately not a 4xx: the caller did nothing wrong, the operator's key list is incomplete.
    """


class InternalFault(CoordinatorError):
    """Something is broken: stored data contradicts itself, or Redis refused a command as wrong.

    Deliberately not a ``ServiceUnavailable``: a 503 tells agents to retry the same request,
    and this request would fail the same way for ever. Answered 500, and raised as a warning
    so an operator sees it (``errors.py``).
    """


class RateLimited(CoordinatorError):
    """Too many requests for one token; ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(CoordinatorError):
    """Redis cannot be reached or answered with an error; retrying later is safe."""


class NotDurable(ServiceUnavailable):
    """A write was not confirmed on disk (and replicas) in time; retry the same request."""


class NumberingNotInitialised(ServiceUnavailable):
    """No number was ever issued and the sequences were never set explicitly: the store may
    have lost its data, and numbering from it would hand out numbers already printed."""


class NumberingBehind(ServiceUnavailable):
    """A sync saw, in a WHMCS, a number of this period above the counter: the store is behind
    reality until an admin raises ``next_number`` past it."""


class RecoveryIncomplete(ServiceUnavailable):
    """``invoice-sync recover`` could not read a source of the numbers in use completely (a
    WHMCS, an agent's journal); nothing was recovered."""


class SecretsNotConfigured(ServiceUnavailable):
    """No usable INVOICE_SYNC_SECRET_KEYS, so WHMCS secrets cannot be encrypted or read."""


class ReconciliationNotReady(ServiceUnavailable):
    """The reconciliation state has not been built yet (a store of the previous release, before
    the worker or scheduler first ran): the report is not guessed, it is answered later."""
