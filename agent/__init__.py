"""invoice-sync agent: take the next legal number from the coordinator, fail closed.

Thin on purpose: requests and the standard library only; never imports coordinator code.
"""

from agent._exceptions import (
    AgentError,
    ConfigError,
    WhmcsAccessDeniedError,
    WhmcsAccessKeyError,
    WhmcsApiError,
    WhmcsAuthError,
    WhmcsBadResponseError,
    WhmcsConnectionError,
    WhmcsError,
    WhmcsIpBannedError,
    WhmcsIpNotAllowedError,
    WhmcsPermissionError,
    WhmcsTimeoutError,
    WhmcsTlsError,
)
from agent._whmcs import InvoicePage, WhmcsClient, WhmcsInvoice

# A plain sorted literal (not sorted(...)): linters only read literals; a test checks the order.
__all__ = [
    "AgentError",
    "ConfigError",
    "InvoicePage",
    "WhmcsAccessDeniedError",
    "WhmcsAccessKeyError",
    "WhmcsApiError",
    "WhmcsAuthError",
    "WhmcsBadResponseError",
    "WhmcsClient",
    "WhmcsConnectionError",
    "WhmcsError",
    "WhmcsInvoice",
    "WhmcsIpBannedError",
    "WhmcsIpNotAllowedError",
    "WhmcsPermissionError",
    "WhmcsTimeoutError",
    "WhmcsTlsError",
]
