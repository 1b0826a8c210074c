"""invoice-sync agent: take the next legal number from the coordinator, fail closed.

Thin on purpose: requests and the standard library only; never imports coordinator code.

::

    import agent

    with agent.Client(agent.Config.load()) as client:
        allocation = client.allocate("invoice", "10234")
        ...
        client.confirm(allocation.id, allocation.formatted)
"""

from agent._cli import ExitCode, main
from agent._client import Client, RetryPolicy
from agent._config import Config
from agent._exceptions import (
    AgentError,
    ConfigError,
    CoordinatorBadResponse,
    CoordinatorError,
    CoordinatorRefused,
    CoordinatorUnavailable,
    CoordinatorUnreachable,
    JournalError,
    NumberWentBackwards,
    PollerBusy,
    WhmcsAccessDeniedError,
    WhmcsAccessKeyError,
    WhmcsApiError,
    WhmcsAuthError,
    WhmcsBadResponseError,
    WhmcsConnectionError,
    WhmcsError,
    WhmcsInvoiceNotFoundError,
    WhmcsIpBannedError,
    WhmcsIpNotAllowedError,
    WhmcsPermissionError,
    WhmcsTimeoutError,
    WhmcsTlsError,
)
from agent._journal import Journal, JournalEntry
from agent._models import Allocation, Status
from agent._poller import Outcome, Poller, PollReport, needs_number
from agent._sidecar import Sidecar, make_server
from agent._transport import MockTransport, mock_response
from agent.whmcs import InvoicePage, WhmcsClient, WhmcsInvoice

# A plain sorted literal (not sorted(...)): linters only read literals; a test checks the order.
__all__ = [
    "AgentError",
    "Allocation",
    "Client",
    "Config",
    "ConfigError",
    "CoordinatorBadResponse",
    "CoordinatorError",
    "CoordinatorRefused",
    "CoordinatorUnavailable",
    "CoordinatorUnreachable",
    "ExitCode",
    "InvoicePage",
    "Journal",
    "JournalEntry",
    "JournalError",
    "MockTransport",
    "NumberWentBackwards",
    "Outcome",
    "PollReport",
    "Poller",
    "PollerBusy",
    "RetryPolicy",
    "Sidecar",
    "Status",
    "WhmcsAccessDeniedError",
    "WhmcsAccessKeyError",
    "WhmcsApiError",
    "WhmcsAuthError",
    "WhmcsBadResponseError",
    "WhmcsClient",
    "WhmcsConnectionError",
    "WhmcsError",
    "WhmcsInvoice",
    "WhmcsInvoiceNotFoundError",
    "WhmcsIpBannedError",
    "WhmcsIpNotAllowedError",
    "WhmcsPermissionError",
    "WhmcsTimeoutError",
    "WhmcsTlsError",
    "main",
    "make_server",
    "mock_response",
    "needs_number",
]
