"""Client for the WHMCS External API (``…/includes/api.php``), reduced to what invoice-sync needs.

Used by the agent's poller and by the coordinator's forecaster, so it depends on requests and the
standard library only. Usage::

    client = WhmcsClient("https://billing.example/includes/api.php", identifier, secret)
    for invoice in client.iter_invoices(100):
        print(invoice.id, invoice.invoicenum, invoice.total, invoice.currencycode)
    client.update_invoice(10234, invoicenum="INV-2026-000051")

Two rules shape this module:

* WHMCS answers are parsed defensively (ids as int or str, empty lists as ``[]``, ``""`` or
  ``{"invoice": []}``, unset dates as ``0000-00-00``), and paging never trusts WHMCS's counters.
* Client data (names, company, user id, notes, payment method) is dropped by the parser:
  :class:`WhmcsInvoice` has no field for it, so it cannot leak into storage, logs or reprs.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exc
from urllib3.util.retry import Retry

from agent._exceptions import (
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

DEFAULT_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds. GetInvoices with a large page on a busy WHMCS can take many seconds."""

DEFAULT_RETRIES = 3
"""Retries of one API call on connection errors and HTTP 429/503 before giving up."""

RETRY_AFTER_MAX = 60.0
"""Longest ``Retry-After`` we obey, in seconds; a longer one would stall a sync job for hours."""

MAX_INVOICE_ID = 2**32 - 1
"""Largest invoice id the parser accepts. WHMCS's ``tblinvoices.id`` is a MySQL ``INT``
auto-increment: at most 2,147,483,647 signed, 4,294,967,295 unsigned. A larger (or a zero or
negative) id cannot come from that table; it means a module or proxy rewrote the answer, and
the forecaster sizes nothing by it."""

SNIPPET_CHARS = 160
"""How much of a non-JSON body an error message quotes, enough to recognise a firewall page."""

INVOICE_NOT_FOUND = {"status": "error", "message": "Invoice ID Not Found"}
"""GetInvoice's whole answer (HTTP 200) for an invoice that does not exist (WHMCS.md)."""

PROBE_INVOICE_ID = 0
"""An invoice id WHMCS never assigns (``tblinvoices.id`` is an auto-increment from 1): the
permission probes of :meth:`WhmcsClient.check_access` ask about it, so they touch nothing."""

_MAX_STALE_PAGES = 1000
"""Pages in a row with nothing new before paging is declared stuck (limitstart ignored)."""

_MAX_STEP_BACKS = 50
"""Times one listing steps back after rows shifted under it (invoices deleted meanwhile)."""

_ZERO_DATES = frozenset({"", "0000-00-00", "0000-00-00 00:00:00"})
_IP_RE = re.compile(r"Invalid IP\s+(\S+)", re.IGNORECASE)
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class WhmcsInvoice:
    """One WHMCS invoice, without client data.

    Money is exact ``Decimal`` parsed from WHMCS's strings. ``total`` is what WHMCS computes as
    ``subtotal + tax + tax2 - credit``; credit notes (added by modules) have a negative total.
    Dates WHMCS leaves unset (``0000-00-00``) are ``None``; datetimes are naive, in the WHMCS
    server's local time, exactly as WHMCS stores them.
    """

    id: int
    invoicenum: str
    date: dt.date | None
    duedate: dt.date | None
    datepaid: dt.datetime | None
    status: str
    subtotal: Decimal
    credit: Decimal
    tax: Decimal
    tax2: Decimal
    total: Decimal
    currencycode: str
    updated_at: dt.datetime | None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> WhmcsInvoice:
        """Parse one invoice as GetInvoices (``id``) or GetInvoice (``invoiceid``) returns it.

        Unknown fields, client data included, are ignored.

        Raises:
            WhmcsBadResponseError: A field we rely on is missing or malformed.
        """
        if type(raw) is dict:
            fast = _from_api_fast(cls, raw)
            if fast is not None:
                return fast
        if not isinstance(raw, Mapping):
            raise WhmcsBadResponseError(
                "WHMCS sent an invoice that is not an object; check the WHMCS version and "
                "any module that rewrites API output."
            )
        raw_id = raw.get("id", raw.get("invoiceid"))
        invoice_id = _to_int(raw_id, "id", None)
        if not 0 < invoice_id <= MAX_INVOICE_ID:
            raise WhmcsBadResponseError(
                f"WHMCS sent invoice id {str(invoice_id)[:40]}, outside 1 to {MAX_INVOICE_ID} "
                "(what WHMCS's invoice table can hold). Check the WHMCS version and any module "
                "that rewrites API output."
            )
        return cls(
            id=invoice_id,
            invoicenum=_to_str(raw.get("invoicenum")),
            date=_to_date(raw.get("date"), "date", invoice_id),
            duedate=_to_date(raw.get("duedate"), "duedate", invoice_id),
            datepaid=_to_datetime(raw.get("datepaid"), "datepaid", invoice_id),
            status=_to_str(raw.get("status")),
            subtotal=_to_decimal(raw.get("subtotal"), "subtotal", invoice_id),
            credit=_to_decimal(raw.get("credit"), "credit", invoice_id),
            tax=_to_decimal(raw.get("tax"), "tax", invoice_id),
            tax2=_to_decimal(raw.get("tax2"), "tax2", invoice_id),
            total=_to_decimal(raw.get("total"), "total", invoice_id),
            currencycode=_to_str(raw.get("currencycode")),
            updated_at=_to_datetime(raw.get("updated_at"), "updated_at", invoice_id),
        )


@dataclass(frozen=True, slots=True)
class InvoicePage:
    """One GetInvoices answer.

    ``totalresults`` and ``numreturned`` are WHMCS's own counters, kept for progress display
    (``total_hint``) only: never use them to decide when paging is over.
    """

    invoices: tuple[WhmcsInvoice, ...]
    totalresults: int
    startnumber: int
    numreturned: int


class _CappedRetry(Retry):
    """urllib3 ``Retry`` that obeys ``Retry-After`` only up to :data:`RETRY_AFTER_MAX`."""

    def get_retry_after(self, response):
        retry_after = super().get_retry_after(response)
        if retry_after is None:
            return None
        return min(retry_after, RETRY_AFTER_MAX)


class WhmcsClient:
    """Call one WHMCS installation's External API.

    Args:
        url: The full API URL, ``https://host/includes/api.php``.
        identifier: API credential identifier.
        secret: API credential secret. Never appears in reprs or error messages.
        access_key: The ``$api_access_key`` of WHMCS's configuration.php, if used instead of
            (or besides) API IP Access Restriction.
        session: A ``requests.Session`` to use (tests inject one). Without it the client builds
            its own with retries mounted; an injected session is used as is.
        timeout: ``(connect, read)`` seconds, or one number for both.
        retries: Retries per call on connection errors and HTTP 429/503 (``Retry-After``
            honoured). Retrying POSTs is safe: our calls are reads or idempotent writes.
        backoff_factor: urllib3 exponential backoff factor between retries.
        verify: TLS verification: ``True``, ``False`` (never in production) or a CA bundle path.

    Attributes:
        calls: API calls made by this client (one per action request; transport-level retries
            of the same request are not counted). Benchmarks report it.
    """

    def __init__(
        self,
        url: str,
        identifier: str,
        secret: str,
        access_key: str | None = None,
        *,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff_factor: float = 0.5,
        verify: bool | str = True,
    ) -> None:
        self.url = url
        self._identifier = identifier
        self._secret = secret
        self._access_key = access_key or None
        self.timeout = timeout
        self.verify = verify
        self.calls = 0
        self._owns_session = session is None
        self._session = session if session is not None else _build_session(retries, backoff_factor)

    def __repr__(self) -> str:
        return f"WhmcsClient(url={_safe_url(self.url)!r})"

    def __enter__(self) -> WhmcsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session if this client built it."""
        if self._owns_session:
            self._session.close()

    # -- actions ---------------------------------------------------------------------------

    def get_invoices(
        self,
        limitstart: int = 0,
        limitnum: int = 25,
        *,
        status: str | None = None,
        orderby: str = "id",
        order: str = "asc",
    ) -> InvoicePage:
        """Fetch one page of invoices (action GetInvoices).

        Args:
            limitstart: Offset of the first row.
            limitnum: Rows wanted; some WHMCS versions ignore it and send their default.
            status: Only invoices with this status (``"Paid"``, ``"Unpaid"``, ``"Overdue"``…).
            orderby: ``id`` | ``invoicenumber`` | ``date`` | ``duedate`` | ``total`` | ``status``.
            order: ``asc`` | ``desc``.
        """
        params: dict[str, Any] = {
            "limitstart": int(limitstart),
            "limitnum": int(limitnum),
            "orderby": orderby,
            "order": order,
        }
        if status:
            params["status"] = status
        data = self.call("GetInvoices", **params)
        rows = _invoice_rows(data.get("invoices"))
        invoices = tuple(WhmcsInvoice.from_api(row) for row in rows)
        return InvoicePage(
            invoices=invoices,
            totalresults=_to_int(data.get("totalresults"), "totalresults", None, len(invoices)),
            startnumber=_to_int(data.get("startnumber"), "startnumber", None, int(limitstart)),
            numreturned=_to_int(data.get("numreturned"), "numreturned", None, len(invoices)),
        )

    def iter_invoices(
        self, page_size: int, *, order: str = "asc", status: str | None = None
    ) -> Iterator[WhmcsInvoice]:
        """Yield every invoice, page by page, the way WHMCS must be paged.

        Pages by ``orderby=id``, advances ``limitstart`` by the rows actually received (WHMCS may
        ignore ``limitnum``) and stops on the first empty page; ``totalresults`` is not trusted.
        Each invoice is yielded once even when rows shift between pages (an invoice added while
        paging in ``desc`` order pushes rows down). In ``asc`` order, invoices added while paging
        come last and are included; an invoice deleted while paging can shift one row past us,
        which the next sync picks up.

        Raises:
            WhmcsBadResponseError: WHMCS keeps sending rows already seen in ``asc`` order, i.e.
                it ignores ``limitstart``; paging would never end.
        """
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        seen: set[int] = set()
        start = 0
        while True:
            page = self.get_invoices(start, page_size, status=status, orderby="id", order=order)
            if not page.invoices:
                return
            fresh = [inv for inv in page.invoices if inv.id not in seen]
            if not fresh and order == "asc":
                raise WhmcsBadResponseError(
                    f"WHMCS at {_safe_url(self.url)} answered GetInvoices limitstart={start} "
                    "with rows it had already sent: it ignores limitstart, so paging cannot "
                    "finish. Check for a module or proxy rewriting API requests.",
                    action="GetInvoices",
                )
            for inv in fresh:
                seen.add(inv.id)
                yield inv
            start += len(page.invoices)

    def iter_invoices_above(self, mark: int, page_size: int) -> Iterator[WhmcsInvoice]:
        """Yield every invoice whose id is above ``mark``, newest first (few calls when few).

        Pages ``orderby=id`` descending and stops at the first id at or below ``mark``: with
        nothing new, one call. Each page starts at the previous page's last row (one row of
        overlap); if that row moved up, invoices were deleted meanwhile and rows may have
        shifted past us, so the page is read again from further up.

        Raises:
            WhmcsBadResponseError: WHMCS keeps answering the same rows (ignores limitstart).
        """
        page_size = max(int(page_size), 2)  # one row of overlap needs two rows per page
        seen: set[int] = set()
        start, anchor, step_backs, stale = 0, None, 0, 0
        while True:
            rows = self.get_invoices(start, page_size, orderby="id", order="desc").invoices
            if not rows:
                return
            if anchor is not None and start > 0 and rows[0].id < anchor:
                # The row we read last moved up: rows after it may have shifted past us.
                step_backs += 1
                if step_backs > _MAX_STEP_BACKS:
                    raise WhmcsBadResponseError(
                        f"WHMCS at {_safe_url(self.url)}: the invoice list kept changing while "
                        "it was paged (invoices deleted meanwhile); try again.",
                        action="GetInvoices",
                    )
                start = max(0, start - (len(rows) - 1))
                continue
            fresh = [inv for inv in rows if inv.id > mark and inv.id not in seen]
            stale = 0 if fresh else stale + 1
            if stale > _MAX_STALE_PAGES:
                raise WhmcsBadResponseError(
                    f"WHMCS at {_safe_url(self.url)} keeps answering GetInvoices with rows it "
                    "had already sent: it ignores limitstart. Check for a module or proxy "
                    "rewriting API requests.",
                    action="GetInvoices",
                )
            for inv in fresh:
                seen.add(inv.id)
                yield inv
            if rows[-1].id <= mark or len(rows) == 1:
                return
            anchor = rows[-1].id
            start += len(rows) - 1

    def iter_unnumbered(self, status: str, page_size: int) -> Iterator[WhmcsInvoice]:
        """Yield the invoices of ``status`` that have no ``invoicenum`` (few calls when few).

        Uses ``orderby=invoicenumber`` ascending, where an empty ``invoicenum`` sorts first:
        a page that shows a numbered invoice holds all the unnumbered ones. The caller is
        expected to number what it gets before asking for more: the front is then read again
        (what was numbered has left it). ``limitstart`` cannot page through the unnumbered
        ones: they all tie on the ``ORDER BY`` column, and MySQL orders ties differently from
        one query to the next. So when a whole page holds only invoices already yielded (left
        unnumbered), every invoice of ``status`` is listed by id instead, which is reliable,
        and costs what the installation's history costs: it takes a page of invoices that
        could not be numbered to get there.
        """
        yielded: set[int] = set()
        while True:
            rows = self.get_invoices(
                0, page_size, status=status, orderby="invoicenumber", order="asc"
            ).invoices
            blank = [inv for inv in rows if not inv.invoicenum.strip()]
            fresh = [inv for inv in blank if inv.id not in yielded]
            for inv in fresh:
                yielded.add(inv.id)
                yield inv
            if len(blank) < len(rows) or not rows:
                return  # the page showed where the unnumbered ones end: all were in it
            if not fresh:
                break
        for inv in self.iter_invoices(page_size, status=status):
            if not inv.invoicenum.strip() and inv.id not in yielded:
                yielded.add(inv.id)
                yield inv

    def get_invoice(self, invoiceid: int) -> WhmcsInvoice:
        """Fetch one invoice by its WHMCS id (action GetInvoice).

        GetInvoice does not report the currency, so ``currencycode`` is ``""`` here.

        Raises:
            WhmcsInvoiceNotFoundError: WHMCS's exact answer for a missing invoice.
            WhmcsApiError: Any other error inside the action (e.g. ``Command Not Found``).
        """
        return WhmcsInvoice.from_api(self.call("GetInvoice", invoiceid=int(invoiceid)))

    def check_access(self, actions: tuple[str, ...] = ("GetInvoice", "UpdateInvoice")) -> None:
        """Check that these credentials may run ``actions``, changing nothing in WHMCS.

        Each action is called for invoice :data:`PROBE_INVOICE_ID`, which does not exist, and
        UpdateInvoice without any field to change: a role that allows the action gets
        "Invoice ID Not Found" (HTTP 200), one that does not gets HTTP 403 ``Invalid
        Permissions`` (api.php checks the role before the action runs). GetInvoices needs no
        probe: listing is read-only, so the listing itself is its check.

        Raises:
            WhmcsAccessDeniedError: 403 (permission, credentials, IP), with what to fix.
            WhmcsApiError: Any other answer, e.g. ``Command Not Found`` (a module or proxy in
                front of api.php that does not pass the action on): the action cannot be used.
            WhmcsError: WHMCS unreachable or answering garbage.
        """
        for action in actions:
            # A success (for an id that cannot exist, with nothing to change) changed nothing.
            try:
                self.call(action, invoiceid=PROBE_INVOICE_ID)
            except WhmcsInvoiceNotFoundError:
                continue
            except WhmcsApiError as exc:
                if exc.whmcs_message == INVOICE_NOT_FOUND["message"]:
                    continue  # UpdateInvoice's not-found has "result" (not documented either way)
                raise WhmcsApiError(
                    f"WHMCS at {_safe_url(self.url)} answered {action} for invoice "
                    f"{PROBE_INVOICE_ID} (a probe that changes nothing) with "
                    f"{exc.whmcs_message!r} instead of \"Invoice ID Not Found\": the action "
                    "cannot be used through this URL. Check for a module or proxy in front of "
                    "api.php, and the WHMCS version.",
                    whmcs_message=exc.whmcs_message,
                    action=action,
                    status_code=exc.status_code,
                ) from None

    def update_invoice(self, invoiceid: int, *, invoicenum: str) -> int:
        """Write the legal number into an invoice (action UpdateInvoice, param ``invoicenum``).

        Idempotent: writing the same number twice leaves the same state, which is why the
        transport may retry it.

        Returns:
            The invoice id WHMCS reports as updated.
        """
        data = self.call("UpdateInvoice", invoiceid=int(invoiceid), invoicenum=invoicenum)
        return _to_int(data.get("invoiceid"), "invoiceid", None, int(invoiceid))

    # -- transport -------------------------------------------------------------------------

    def call(self, action: str, **params: Any) -> dict[str, Any]:
        """Call any API action and return WHMCS's JSON answer (``result=success``).

        Raises:
            WhmcsError: A subclass naming the cause and what to fix.
        """
        form: dict[str, Any] = {
            **params,
            "action": action,
            "identifier": self._identifier,
            "secret": self._secret,
            "responsetype": "json",
        }
        if self._access_key:
            form["accesskey"] = self._access_key
        self.calls += 1
        try:
            response = self._session.post(
                self.url,
                data=form,
                timeout=self.timeout,
                verify=self.verify,
                # A redirect turns the POST into a GET and drops our parameters; report it instead.
                allow_redirects=False,
                headers={"Accept": "application/json"},
            )
            body = response.content
        except requests.exceptions.RequestException as exc:
            raise self._transport_error(action, exc) from None
        return self._interpret(action, response.status_code, response.headers, body)

    def _transport_error(
        self, action: str, exc: requests.exceptions.RequestException
    ) -> WhmcsError:
        host = _safe_url(self.url)
        if isinstance(exc, requests.exceptions.SSLError):
            return WhmcsTlsError(
                f"TLS connection to WHMCS at {host} failed ({self._reason(exc)}). Check that the "
                "URL starts with https:// only if the server speaks TLS, and that its certificate "
                "is valid for this host name and trusted here.",
                action=action,
            )
        if _is_timeout(exc):
            return WhmcsTimeoutError(
                f"WHMCS at {host} did not answer {action} within {self.timeout} seconds. Check "
                "the server's load and network path; a smaller page size (step) makes each "
                "GetInvoices call lighter.",
                action=action,
            )
        if isinstance(
            exc,
            requests.exceptions.ConnectionError
            | requests.exceptions.ChunkedEncodingError
            | requests.exceptions.ContentDecodingError,
        ):
            return WhmcsConnectionError(
                f"Connection to WHMCS at {host} failed during {action} ({self._reason(exc)}). "
                "Check the API URL, DNS and any firewall between here and WHMCS; the call can "
                "be retried.",
                action=action,
            )
        return WhmcsConnectionError(
            f"Request to WHMCS at {host} failed during {action} ({self._reason(exc)}). "
            "Check the API URL.",
            action=action,
        )

    def _interpret(
        self, action: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> dict[str, Any]:
        host = _safe_url(self.url)
        if 300 <= status < 400:
            location = _safe_url(headers.get("Location", "") or "(none)")
            raise WhmcsBadResponseError(
                f"WHMCS at {host} answered HTTP {status}, a redirect to {location}. Set the API "
                "URL to the final address (usually https://…/includes/api.php).",
                action=action,
                status_code=status,
            )
        try:
            data = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if data == INVOICE_NOT_FOUND and status == 200:
            raise WhmcsInvoiceNotFoundError(
                f"WHMCS at {host} has no such invoice ({action}: Invoice ID Not Found).",
                whmcs_message=INVOICE_NOT_FOUND["message"],
                action=action,
                status_code=status,
            )
        if not isinstance(data, dict) or "result" not in data:
            snippet = self._snippet(body)
            kind = _describe_body(headers.get("Content-Type", ""), body)
            raise WhmcsBadResponseError(
                f"WHMCS at {host} answered HTTP {status} with {kind}, not API JSON: "
                f"{snippet!r}. A firewall, WAF, CDN or maintenance page may stand in front of "
                "api.php (allow this caller there), or the URL does not point to "
                "…/includes/api.php.",
                action=action,
                status_code=status,
                snippet=snippet,
            )
        if data.get("result") == "success" and status < 400:
            return data
        message = self._scrub(_to_str(data.get("message"))) or "(no message)"
        raise self._error_for(action, status, message)

    def _error_for(self, action: str, status: int, message: str) -> WhmcsError:
        low = message.lower()
        host = _safe_url(self.url)
        kw: dict[str, Any] = {"action": action, "status_code": status}
        denied: dict[str, Any] = {**kw, "whmcs_message": message}  # WHMCS's words, verbatim
        if low.startswith("invalid or missing credentials") or low.startswith(
            "authentication failed"
        ):
            return WhmcsAuthError(
                f"WHMCS at {host} rejected the API credentials ({message}). Check the API "
                "identifier and secret in WHMCS: Configuration → System Settings → Manage API "
                "Credentials (generate new ones if the secret is lost).",
                **denied,
            )
        if low.startswith("invalid permissions"):
            return WhmcsPermissionError(
                f'WHMCS at {host} does not allow API action "{action}" for these credentials '
                f"({message}). Add {action} to the credentials' API role: Configuration → "
                "System Settings → Manage API Credentials → API Roles.",
                **denied,
            )
        if low.startswith("invalid ip"):
            match = _IP_RE.search(message)
            ip = match.group(1) if match else None
            seen = ip or "this caller's address"
            return WhmcsIpNotAllowedError(
                f"WHMCS at {host} refused API calls from IP {seen}. Add {seen} to Configuration "
                "→ System Settings → General Settings → Security → API IP Access Restriction "
                "(it is the address WHMCS sees, e.g. your NAT or proxy), or configure an "
                "access key.",
                ip=ip,
                **denied,
            )
        if low.startswith("invalid access key"):
            return WhmcsAccessKeyError(
                f"WHMCS at {host} rejected the access key ({message}). Use the value of "
                "$api_access_key from WHMCS's configuration.php, or add this caller's IP to "
                "API IP Access Restriction instead.",
                **denied,
            )
        if low.startswith("ip banned"):
            return WhmcsIpBannedError(
                f"WHMCS at {host} has banned this caller's IP ({message}), usually after failed "
                "logins. Remove the ban in WHMCS (Configuration → System Settings → Banned "
                "IPs) after fixing the credentials that caused it.",
                **denied,
            )
        if status == 403:
            return WhmcsAccessDeniedError(
                f"WHMCS at {host} refused {action} with HTTP 403: {message}. Check the API "
                "credentials, role and IP restrictions.",
                **denied,
            )
        return WhmcsApiError(
            f"WHMCS at {host} could not run {action}: {message}.",
            whmcs_message=message,
            **kw,
        )

    def _scrub(self, text: str) -> str:
        """Remove our credentials from text that goes into an error message."""
        for value in (self._secret, self._identifier, self._access_key):
            # Short values would mangle unrelated text; real credentials are long.
            if value and len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def _snippet(self, body: bytes) -> str:
        text = body[: SNIPPET_CHARS * 8].decode("utf-8", "replace")
        text = _SPACE_RE.sub(" ", _TAG_RE.sub(" ", text)).strip()
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
        return self._scrub(text)[:SNIPPET_CHARS]

    def _reason(self, exc: BaseException) -> str:
        """Return the innermost cause of a requests/urllib3 error, short and without secrets."""
        reason: BaseException = exc
        for _ in range(6):
            nxt = getattr(reason, "reason", None)
            if isinstance(nxt, BaseException):
                reason = nxt
                continue
            if reason.args and isinstance(reason.args[0], BaseException):
                reason = reason.args[0]
                continue
            break
        text = str(reason) or type(reason).__name__
        return self._scrub(_SPACE_RE.sub(" ", text))[:200]


def _is_timeout(exc: BaseException) -> bool:
    """Tell whether a requests error is a timeout.

    requests raises ``ConnectionError`` (not ``Timeout``) when urllib3 gave up retrying after a
    read timeout, so the cause chain has to be searched.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, urllib3_exc.NewConnectionError):
            return False  # a refused connection, which urllib3 derives from ConnectTimeoutError
        if isinstance(seen, requests.exceptions.Timeout | TimeoutError | urllib3_exc.TimeoutError):
            return True
        nxt = getattr(seen, "reason", None)
        if not isinstance(nxt, BaseException) and seen.args:
            nxt = seen.args[0]
        seen = nxt if isinstance(nxt, BaseException) else None
    return False


def _build_session(retries: int, backoff_factor: float) -> requests.Session:
    retry = _CappedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        # TLS and other non-network errors will not heal by retrying.
        other=0,
        redirect=0,
        backoff_factor=backoff_factor,
        status_forcelist=(429, 503),
        allowed_methods=frozenset({"GET", "POST"}),
        respect_retry_after_header=True,
        # Hand the last 429/503 back to us so it is classified like any other answer.
        raise_on_status=False,
        raise_on_redirect=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _invoice_rows(value: Any) -> list[Mapping[str, Any]]:
    """Return the invoice rows of GetInvoices' ``invoices``, whatever shape WHMCS chose."""
    if not value:  # [], "", None, {}
        return []
    if isinstance(value, Mapping):
        value = value.get("invoice") or []
        if isinstance(value, Mapping):  # a single row not wrapped in a list
            value = [value]
    if not isinstance(value, list):
        raise WhmcsBadResponseError(
            "WHMCS sent GetInvoices 'invoices' in an unknown shape; check the WHMCS version "
            "and any module that rewrites API output."
        )
    return value


def _safe_url(url: str) -> str:
    """Return url without user info, query or fragment, fit for messages and reprs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid URL)"
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _describe_body(content_type: str, body: bytes) -> str:
    head = body[:200].lstrip().lower()
    if not head:
        return "an empty body"
    if "html" in content_type.lower() or head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head.startswith(b"<?xml") or "xml" in content_type.lower():
        return "XML (was responsetype=json dropped on the way?)"
    return "a non-JSON body"


def _bad_field(field: str, invoice_id: int | None, value: Any) -> WhmcsBadResponseError:
    where = f" of invoice {invoice_id}" if invoice_id is not None else ""
    # Only fields we parse reach here (ids, dates, money): none of them is client data.
    shown = repr(value)[:40]
    return WhmcsBadResponseError(
        f"WHMCS sent field {field!r}{where} as {shown}, which is not a valid value. Check the "
        "WHMCS version and any module that rewrites API output."
    )


_new = object.__new__
_date = dt.date.fromisoformat
_datetime = dt.datetime.fromisoformat
_ZERO_DATETIME = "0000-00-00 00:00:00"


def _from_api_fast(cls: type[WhmcsInvoice], raw: dict[str, Any]) -> WhmcsInvoice | None:
    """Parse the well-formed common case (GetInvoices of WHMCS 7+), or return None.

    Gives exactly what the tolerant path would, a few times faster: each step either takes a
    value the tolerant path would read the same way, or gives up (None) and lets it decide
    (string ids, missing fields, padding, unknown date formats, bad values and their errors).
    Money must be a ``str`` here: ``Decimal`` of a float would keep its binary noise.
    """
    get = raw.get
    invoice_id, invoicenum, status, currency = (
        get("id"), get("invoicenum"), get("status"), get("currencycode")
    )
    subtotal, credit, tax, tax2, total = (
        get("subtotal"), get("credit"), get("tax"), get("tax2"), get("total")
    )
    if (
        type(invoice_id) is not int
        or not 0 < invoice_id <= MAX_INVOICE_ID
        or type(invoicenum) is not str
        or type(status) is not str
        or type(currency) is not str
        or type(subtotal) is not str
        or type(credit) is not str
        or type(tax) is not str
        or type(tax2) is not str
        or type(total) is not str
    ):
        return None
    date, duedate, datepaid, updated_at = (
        get("date"), get("duedate"), get("datepaid"), get("updated_at")
    )
    try:
        # fromisoformat rejects surrounding blanks and, for dates, anything longer than a date:
        # whatever it takes the tolerant path (strip, first ten characters) reads identically.
        values = (
            invoice_id,
            invoicenum,
            None if date == "0000-00-00" else _date(date),
            None if duedate == "0000-00-00" else _date(duedate),
            None if datepaid == _ZERO_DATETIME else _datetime(datepaid),
            status,
            Decimal(subtotal),
            Decimal(credit),
            Decimal(tax),
            Decimal(tax2),
            Decimal(total),
            currency,
            None if updated_at == _ZERO_DATETIME else _datetime(updated_at),
        )
    except (TypeError, ValueError, ArithmeticError):  # InvalidOperation is an ArithmeticError
        return None
    for amount in values[6:11]:
        if not amount.is_finite():
            return None
    invoice = _new(cls)
    for setter, value in zip(_SETTERS, values, strict=True):
        setter(invoice, value)
    return invoice


# A frozen dataclass's __init__ goes through object.__setattr__ per field; the slots' own
# descriptors set the same attributes in about half the time.
_SETTERS = tuple(getattr(WhmcsInvoice, f).__set__ for f in WhmcsInvoice.__dataclass_fields__)


def _to_int(value: Any, field: str, invoice_id: int | None, default: int | None = None) -> int:
    if value is None or value == "":
        if default is not None:
            return default
        raise _bad_field(field, invoice_id, value)
    if isinstance(value, bool):
        raise _bad_field(field, invoice_id, value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise _bad_field(field, invoice_id, value) from None


def _to_str(value: Any) -> str:
    return "" if value is None else str(value)


def _to_decimal(value: Any, field: str, invoice_id: int) -> Decimal:
    if value is None or value == "":
        return Decimal("0.00")
    if isinstance(value, bool):
        raise _bad_field(field, invoice_id, value)
    # str() first: Decimal(float) would carry binary noise, Decimal(str(float)) keeps "15.95".
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation:
        raise _bad_field(field, invoice_id, value) from None
    if not result.is_finite():
        raise _bad_field(field, invoice_id, value)
    return result


def _to_date(value: Any, field: str, invoice_id: int) -> dt.date | None:
    text = _to_str(value).strip()
    if text in _ZERO_DATES:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise _bad_field(field, invoice_id, value) from None


def _to_datetime(value: Any, field: str, invoice_id: int) -> dt.datetime | None:
    text = _to_str(value).strip()
    if text in _ZERO_DATES or text.startswith("0000-00-00"):
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise _bad_field(field, invoice_id, value) from None
