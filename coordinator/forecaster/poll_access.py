"""Which WHMCS API actions a central poll needs, and which the system's API role refuses.

A central poll lists invoices (GetInvoices), reads one back (GetInvoice) and writes its number
(UpdateInvoice). A role without an action answers HTTP 403 with exactly
``Invalid Permissions: API action "<action, lower case>" is not allowed`` (WHMCS.md). Only that
exact answer, naming the action that was asked, counts as "the role lacks it": a wrong secret, an
IP not allowed, a firewall page or a differently worded refusal says nothing about the role and
is reported as what it is.

The probe changes nothing: GetInvoices asks for one row, GetInvoice and UpdateInvoice are asked
about an invoice that cannot exist (:meth:`agent.WhmcsClient.check_access`).
"""

from __future__ import annotations

import dataclasses
import re

from agent import WhmcsAccessDeniedError, WhmcsClient, WhmcsError

NEEDED = ("GetInvoices", "GetInvoice", "UpdateInvoice")
"""The API actions a central poll uses, in the order it needs them."""

RECHECK_SECONDS = 24 * 3600
"""How old the last probe of a system's role may get before a poll that went well probes again
(a poll that failed, and the first poll, always probe)."""

_DENIED = re.compile(r'Invalid Permissions: API action "([a-z]+)" is not allowed')
"""WHMCS's answer (HTTP 403) when the API role does not allow the action."""


def denied_action(error: WhmcsError) -> str | None:
    """Return the action ``error`` says the API role lacks, or ``None`` for any other failure.

    Only WHMCS's exact answer counts: HTTP 403, the whole message as WHMCS words it, and the
    action it names being the one that was called.
    """
    if not isinstance(error, WhmcsAccessDeniedError) or error.status_code != 403:
        return None
    match = _DENIED.fullmatch(error.whmcs_message)
    if match is None or error.action is None or match[1] != error.action.lower():
        return None
    return error.action


@dataclasses.dataclass(frozen=True)
class Access:
    """What a probe found.

    Attributes:
        missing: The needed actions the role refuses, in :data:`NEEDED` order.
        problem: Another failure that stopped the probe (credentials, IP, network), else None.
    """

    missing: tuple[str, ...] = ()
    problem: str | None = None

    def describe(self) -> str:
        """Say what the role lacks, quoting WHMCS's answers (empty when it lacks nothing)."""
        if not self.missing:
            return ""
        quoted = "; ".join(
            f"Invalid Permissions: API action \"{a.lower()}\" is not allowed" for a in self.missing)
        return (f"the API role of the system's WHMCS credentials lacks {', '.join(self.missing)} "
                f"(WHMCS answered: {quoted}). Add {' and '.join(self.missing)} to that role: "
                "System Settings → Manage API Credentials → API Roles → Billing")


def probe(whmcs: WhmcsClient) -> Access:
    """Ask WHMCS about each action of :data:`NEEDED`, changing nothing; return what it refused."""
    missing: list[str] = []
    for action in NEEDED:
        try:
            if action == "GetInvoices":
                whmcs.get_invoices(0, 1)
            else:
                whmcs.check_access((action,))
        except WhmcsError as error:
            denied = denied_action(error)
            if denied is None:
                return Access(tuple(missing), error.message)
            missing.append(denied)
    return Access(tuple(missing))
