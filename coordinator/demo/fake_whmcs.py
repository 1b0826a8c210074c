"""A fake WHMCS External API that answers like the real one (see WHMCS.md), standard library only.

Tests, benchmarks (100,000 invoices) and the demo talk to it over real HTTP::

    app = FakeWhmcs("ident", "secret")
    app.seed(500)
    with serve_fake_whmcs(app) as server:
        client = WhmcsClient(server.url, "ident", "secret")

What it reproduces: the GetInvoices / GetInvoice / UpdateInvoice answers field for field (client
data included, money as strings, unset dates as ``0000-00-00``), WHMCS's error messages and status
codes (403 for auth/permission/IP, 200 for errors inside an action), XML without
``responsetype=json``, old versions' string ids and ignored ``limitnum``. Faults can be injected
at runtime: a firewall's HTML page, an HTTP error, a delay, a connection reset mid-body.

Run it by hand with ``python -m coordinator.demo.fake_whmcs --port 9000 --seed-count 500``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import random
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from xml.sax.saxutils import escape

STATUSES = ("Draft", "Unpaid", "Paid", "Cancelled", "Refunded", "Collections", "Payment Pending")
"""Invoice statuses WHMCS stores; ``Overdue`` is only a GetInvoices filter (Unpaid, past due)."""

ORDER_FIELDS = ("id", "invoicenumber", "date", "duedate", "total", "status")
"""GetInvoices ``orderby`` values WHMCS accepts; anything else falls back to ``id``."""

DEFAULT_LIMITNUM = 25
"""Rows GetInvoices returns when ``limitnum`` is absent (or ignored by old versions)."""

ZERO_DATE = "0000-00-00"
ZERO_DATETIME = "0000-00-00 00:00:00"

CURRENCY_AFFIXES = {
    "EUR": ("€", " EUR"),
    "USD": ("$", " USD"),
    "GBP": ("£", " GBP"),
    "CHF": ("", " CHF"),
    "JPY": ("¥", " JPY"),
}

_ACTIONS = {
    "getinvoices": "GetInvoices",
    "getinvoice": "GetInvoice",
    "updateinvoice": "UpdateInvoice",
}
_MAX_BODY = 1 << 20

# Seeding mix: mostly paid, as in a live billing system.
_SEED_STATUSES = ("Paid", "Unpaid", "Cancelled", "Refunded", "Draft", "Payment Pending")
_SEED_WEIGHTS = (72, 13, 7, 3, 3, 2)
_FIRST = ("Anna", "Luca", "Marie", "Jonas", "Sofia", "Liam", "Emma", "Noah", "Chloé", "Mateo")
_LAST = ("Rossi", "Müller", "Martin", "Smith", "García", "Novak", "Dubois", "Jensen", "Kowalski")
_COMPANIES = ("", "", "", "Acme Ltd", "Example GmbH", "Muster S.r.l.", "Initech SARL")
_GATEWAYS = ("paypalcheckout", "stripe", "banktransfer", "mailin")
_DUE_IN = tuple(dt.timedelta(days=d) for d in (7, 14, 30))
_TAX_RATES = ((0, 0), (19, 0), (20, 0), (21, 0), (22, 0), (5, 9975))  # (rate%, rate2 in 1/1000 %)


@dataclass(slots=True)
class _Fault:
    kind: str
    status: int
    body: bytes
    content_type: str
    delay: float
    retry_after: str | None
    remaining: int | None
    at_request: int | None
    action: str | None = None


class FakeWhmcs:
    """WSGI app emulating one WHMCS installation's ``includes/api.php``.

    Args:
        identifier: The API credential identifier it accepts.
        secret: The matching secret.
        access_key: ``$api_access_key`` (configuration.php): a caller sending it skips the IP check.
        allowed_ips: API IP Access Restriction; ``None`` lets every IP in.
        allowed_actions: Actions the credentials' API role allows (any case); ``None`` = all.
        banned_ips: IPs WHMCS has banned.
        ignore_limitnum: Behave like versions that always return ``DEFAULT_LIMITNUM`` rows.
        string_ids: Behave like older versions that send ids and counters as strings.
        shuffle_ties: Return rows that tie on ``orderby`` (every unnumbered invoice under
            ``orderby=invoicenumber``) in a new random order on each request, as MySQL may
            (``ORDER BY`` without a unique key defines no order among ties).
        clock: Returns "now" (naive, server local time); decides Overdue and updated_at.

    Attributes:
        dropped_update_fields: UpdateInvoice parameters answered with success but not stored,
            as a WHMCS version or module might do with ``invoicenum`` (it is not in the
            documented parameter list).
        seen_ip: When set, the client IP WHMCS "sees" instead of ``REMOTE_ADDR`` (a proxy or NAT).
        calls: Requests received, per action name (as WHMCS spells it).
    """

    def __init__(
        self,
        identifier: str,
        secret: str,
        *,
        access_key: str | None = None,
        allowed_ips: Iterable[str] | None = None,
        allowed_actions: Iterable[str] | None = None,
        banned_ips: Iterable[str] = (),
        ignore_limitnum: bool = False,
        string_ids: bool = False,
        shuffle_ties: bool = False,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        self.identifier = identifier
        self.secret = secret
        self.access_key = access_key
        self.allowed_ips = None if allowed_ips is None else set(allowed_ips)
        self.allowed_actions = (
            None if allowed_actions is None else {a.lower() for a in allowed_actions}
        )
        self.banned_ips = set(banned_ips)
        self.ignore_limitnum = ignore_limitnum
        self.string_ids = string_ids
        self.shuffle_ties = shuffle_ties
        self.clock = clock
        self.dropped_update_fields: set[str] = set()
        self.seen_ip: str | None = None
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._invoices: dict[int, dict[str, Any]] = {}
        self._clients: dict[int, dict[str, str]] = {}
        self._next_id = 1
        self._views: dict[tuple, list[int]] = {}
        self._faults: list[_Fault] = []
        self._requests = 0

    # -- test-facing data API ---------------------------------------------------------------

    def add_client(self, currencycode: str = "USD", **fields: str) -> int:
        """Create a client (only what invoices show of it) and return its id."""
        with self._lock:
            return self._add_client_locked(currencycode, fields)

    def _add_client_locked(self, currencycode: str, fields: dict[str, str]) -> int:
        client_id = len(self._clients) + 1
        prefix, suffix = CURRENCY_AFFIXES.get(currencycode, ("", f" {currencycode}"))
        self._clients[client_id] = {
            "firstname": fields.get("firstname", "Test"),
            "lastname": fields.get("lastname", f"Client{client_id}"),
            "companyname": fields.get("companyname", ""),
            "currencycode": currencycode,
            "currencyprefix": prefix,
            "currencysuffix": suffix,
        }
        return client_id

    def set_client_currency(self, userid: int, currencycode: str) -> None:
        """Change a client's currency; like WHMCS, every invoice of that client then shows it."""
        prefix, suffix = CURRENCY_AFFIXES.get(currencycode, ("", f" {currencycode}"))
        with self._lock:
            self._clients[userid].update(
                currencycode=currencycode, currencyprefix=prefix, currencysuffix=suffix
            )

    def add_invoice(self, **fields: Any) -> int:
        """Add one invoice and return its id.

        Any GetInvoices field may be given. ``userid`` picks an existing client; without it a new
        client is created in ``currencycode`` (default USD). Money may be str, int or Decimal;
        ``total`` defaults to WHMCS's ``subtotal + tax + tax2 - credit``. Dates may be
        ``datetime.date``/``datetime`` or WHMCS strings.
        """
        with self._lock:
            userid = fields.pop("userid", None)
            currency = fields.pop("currencycode", "USD")
            if userid is None or int(userid) not in self._clients:
                userid = self._add_client_locked(currency, {})
            now = _fmt_dt(self.clock())
            money = {
                k: _money_str(fields.pop(k, "0.00")) for k in ("subtotal", "credit", "tax", "tax2")
            }
            total = fields.pop("total", None)
            if total is None:
                d = {k: Decimal(v) for k, v in money.items()}
                total = d["subtotal"] + d["tax"] + d["tax2"] - d["credit"]
            date = fields.pop("date", None) or self.clock().date()
            row = {
                "userid": int(userid),
                "invoicenum": str(fields.pop("invoicenum", "")),
                "date": _fmt_d(date),
                "duedate": _fmt_d(fields.pop("duedate", date)),
                "datepaid": _fmt_dt(fields.pop("datepaid", None)),
                "last_capture_attempt": ZERO_DATETIME,
                "date_refunded": _fmt_dt(fields.pop("date_refunded", None)),
                "date_cancelled": _fmt_dt(fields.pop("date_cancelled", None)),
                **money,
                "total": _money_str(total),
                "taxrate": str(fields.pop("taxrate", "0.000")),
                "taxrate2": str(fields.pop("taxrate2", "0.000")),
                "status": str(fields.pop("status", "Unpaid")),
                "paymentmethod": str(fields.pop("paymentmethod", "banktransfer")),
                "paymethodid": None,
                "notes": str(fields.pop("notes", "")),
                "created_at": _fmt_dt(fields.pop("created_at", now)),
                "updated_at": _fmt_dt(fields.pop("updated_at", now)),
            }
            row.update(fields)  # extra fields appear as-is, like newer WHMCS versions' additions
            return self._insert_locked(row)

    def set_next_id(self, invoice_id: int) -> None:
        """Give the next invoice ``invoice_id``, as ``ALTER TABLE tblinvoices AUTO_INCREMENT=``
        does in WHMCS's database (ids then jump; they are never reused)."""
        with self._lock:
            self._next_id = max(int(invoice_id), self._next_id)

    def _insert_locked(self, row: dict[str, Any]) -> int:
        invoice_id = self._next_id
        self._next_id += 1
        row["id"] = invoice_id
        self._invoices[invoice_id] = row
        self._views.clear()
        return invoice_id

    def set_status(
        self, invoiceid: int, status: str, datepaid: dt.datetime | str | None = None
    ) -> None:
        """Change an invoice's status, as paying, cancelling or refunding it in WHMCS would."""
        with self._lock:
            row = self._invoices[invoiceid]
            now = self.clock()
            row["status"] = status
            if status == "Paid":
                row["datepaid"] = _fmt_dt(datepaid or now)
            elif datepaid is not None:
                row["datepaid"] = _fmt_dt(datepaid)
            if status == "Cancelled":
                row["date_cancelled"] = _fmt_dt(now)
            if status == "Refunded":
                row["date_refunded"] = _fmt_dt(now)
            row["updated_at"] = _fmt_dt(now)
            self._views.clear()

    def set_invoicenum(self, invoiceid: int, invoicenum: str) -> None:
        """Write an invoice's number, as an admin (or a hook) writing tblinvoices would."""
        with self._lock:
            row = self._invoices[invoiceid]
            row["invoicenum"] = invoicenum
            row["updated_at"] = _fmt_dt(self.clock())
            self._views.clear()

    def delete_invoice(self, invoiceid: int) -> None:
        """Delete an invoice, as an admin can in WHMCS (its id is never reused)."""
        with self._lock:
            del self._invoices[invoiceid]
            self._views.clear()

    def invoices_snapshot(self) -> list[dict[str, Any]]:
        """Return every invoice as GetInvoices would render it (client data included), by id."""
        with self._lock:
            return [self._render_locked(row) for row in self._invoices.values()]

    def __len__(self) -> int:
        return len(self._invoices)

    # -- seeding ----------------------------------------------------------------------------

    def seed(
        self,
        count: int,
        *,
        seed: int = 0,
        start_date: dt.date = dt.date(2024, 1, 1),
        days: int = 730,
        currencies: tuple[str, ...] = ("EUR", "USD", "GBP"),
        clients: int | None = None,
        credit_note_share: float = 0.02,
        unnumbered_paid_share: float = 0.03,
        number_format: str = "INV-{YEAR}-{NUMBER}",
    ) -> list[int]:
        """Add ``count`` realistic invoices spread over ``days`` from ``start_date``; return ids.

        Deterministic for a given ``seed``. Ids grow with the date, as in a live WHMCS. Paid and
        refunded invoices carry a yearly ``invoicenum`` (a few paid ones none, as when a hook
        failed); drafts, unpaid and cancelled ones none (WHMCS proforma mode). Each client has
        one currency and one tax setup; ``total = subtotal + tax + tax2 - credit`` throughout,
        and credit notes (``credit_note_share``) are paid invoices with negative amounts.
        """
        rng = random.Random(seed)
        with self._lock:
            n_clients = clients or max(1, count // 15)
            first_client = len(self._clients) + 1
            taxes: dict[int, tuple[int, int]] = {}
            for _ in range(n_clients):
                cid = self._add_client_locked(
                    rng.choice(currencies),
                    {
                        "firstname": rng.choice(_FIRST),
                        "lastname": rng.choice(_LAST),
                        "companyname": rng.choice(_COMPANIES),
                    },
                )
                taxes[cid] = rng.choice(_TAX_RATES)
            counters: dict[int, int] = {}
            statuses = rng.choices(_SEED_STATUSES, _SEED_WEIGHTS, k=count)
            ids = []
            span = days * 86400
            base = dt.datetime.combine(start_date, dt.time())
            for i in range(count):
                created = base + dt.timedelta(seconds=(span * i) // max(count, 1))
                userid = first_client + int(rng.random() * n_clients)
                rate, rate2 = taxes[userid]
                status = statuses[i]
                credit_note = rng.random() < credit_note_share
                if credit_note:
                    status = "Paid"
                subtotal = 500 + int(rng.random() * 59500)
                tax = (subtotal * rate + 50) // 100
                tax2 = (subtotal * rate2 + 50000) // 100000
                credit = 0
                if not credit_note and status == "Paid" and rng.random() < 0.05:
                    credit = min(subtotal + tax + tax2, rng.randrange(100, 5000))
                if credit_note:
                    subtotal, tax, tax2 = -subtotal, -tax, -tax2
                total = subtotal + tax + tax2 - credit
                date = created.date()
                paid = status in ("Paid", "Refunded")
                created_s = created.isoformat(" ")
                paid_s = ZERO_DATETIME
                if paid:
                    paid_s = (created + dt.timedelta(seconds=int(rng.random() * 864000))).isoformat(
                        " "
                    )
                invoicenum = ""
                if paid and not (status == "Paid" and rng.random() < unnumbered_paid_share):
                    counters[date.year] = counters.get(date.year, 0) + 1
                    invoicenum = number_format.replace("{YEAR}", str(date.year)).replace(
                        "{NUMBER}", f"{counters[date.year]:06d}"
                    )
                row = {
                    "userid": userid,
                    "invoicenum": invoicenum,
                    "date": date.isoformat(),
                    "duedate": (date + _DUE_IN[int(rng.random() * 3)]).isoformat(),
                    "datepaid": paid_s,
                    "last_capture_attempt": ZERO_DATETIME,
                    "date_refunded": paid_s if status == "Refunded" else ZERO_DATETIME,
                    "date_cancelled": created_s if status == "Cancelled" else ZERO_DATETIME,
                    "subtotal": _cents(subtotal),
                    "credit": _cents(credit),
                    "tax": _cents(tax),
                    "tax2": _cents(tax2),
                    "total": _cents(total),
                    "taxrate": f"{rate}.000",
                    "taxrate2": f"{rate2 / 1000:.3f}",
                    "status": status,
                    "paymentmethod": _GATEWAYS[int(rng.random() * len(_GATEWAYS))],
                    "paymethodid": None,
                    "notes": "Paid by bank transfer ref " + str(i) if rng.random() < 0.1 else "",
                    "created_at": created_s,
                    "updated_at": paid_s if paid else created_s,
                }
                ids.append(self._insert_locked(row))
            return ids

    # -- fault injection --------------------------------------------------------------------

    def inject_fault(
        self,
        kind: str,
        *,
        times: int | None = None,
        nth: int | None = None,
        status: int | None = None,
        body: str | bytes | None = None,
        content_type: str | None = None,
        delay: float = 0.0,
        retry_after: str | int | None = None,
        action: str | None = None,
    ) -> None:
        """Make coming requests fail.

        Args:
            kind: ``"html"`` (a firewall page, default HTTP 403), ``"status"`` (an HTTP error,
                default 500; with ``body`` any raw answer), ``"delay"`` (sleep ``delay`` seconds,
                then answer normally), ``"hang"`` (sleep ``delay`` seconds, then reset the
                connection without running the action: a request lost in a stuck PHP worker
                or proxy) or ``"reset"`` (send headers and part of the body, then reset the
                connection).
            times: Affect this many requests; ``None`` = every request until :meth:`clear_faults`.
            nth: Affect only the nth request from now (1 = the next one).
            retry_after: ``Retry-After`` header to send with the error.
            action: Affect only requests of this API action (``"UpdateInvoice"``, any case);
                ``times`` and ``nth`` then count those requests only.
        """
        if kind not in ("html", "status", "delay", "hang", "reset"):
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind == "html":
            status = status or 403
            body = body or _FIREWALL_PAGE
            content_type = content_type or "text/html; charset=UTF-8"
        else:
            status = status or (500 if kind == "status" else 200)
            body = body if body is not None else "Internal Server Error"
            content_type = content_type or "text/plain; charset=UTF-8"
        with self._lock:
            self._faults.append(
                _Fault(
                    kind=kind,
                    status=status,
                    body=body.encode() if isinstance(body, str) else body,
                    content_type=content_type,
                    delay=delay,
                    retry_after=None if retry_after is None else str(retry_after),
                    remaining=times,
                    at_request=None if nth is None else self._count(action) + nth,
                    action=None if action is None else _ACTIONS.get(action.lower(), action),
                )
            )

    def clear_faults(self) -> None:
        """Answer normally again."""
        with self._lock:
            self._faults.clear()

    def _count(self, action: str | None) -> int:
        return self._requests if action is None else self.calls[action]

    def _take_fault_locked(self, action: str) -> _Fault | None:
        for fault in self._faults:
            if fault.action is not None and fault.action != action:
                continue
            if fault.at_request is not None:
                if fault.at_request == self._count(fault.action):
                    self._faults.remove(fault)
                    return fault
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    # -- WSGI -------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        params = _read_params(environ)
        action_raw = params.get("action", "")
        action = _ACTIONS.get(action_raw.lower(), action_raw)
        with self._lock:
            self._requests += 1
            self.calls[action] += 1
            fault = self._take_fault_locked(action)
        if fault is not None:
            if fault.kind in ("delay", "hang"):
                time.sleep(fault.delay)  # outside the lock: other requests go on meanwhile
            if fault.kind != "delay":
                return self._fault_answer(fault, environ, start_response)
        as_json = params.get("responsetype", "").lower() == "json"
        status, payload = self._dispatch(action, params, environ)
        if as_json:
            body = json.dumps(payload, ensure_ascii=False).encode()
            ctype = "application/json; charset=utf-8"
        else:
            body = _to_xml(action, payload).encode()
            ctype = "text/xml; charset=utf-8"
        reason = {200: "200 OK", 403: "403 Forbidden"}[status]
        start_response(reason, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    def _fault_answer(self, fault: _Fault, environ: dict, start_response: Callable) -> list[bytes]:
        if fault.kind == "hang":
            sock = environ.get("fake_whmcs.socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            start_response("500 Internal Server Error", [("Content-Length", "0")])
            return []
        if fault.kind == "reset":
            body = json.dumps({"result": "success", "invoices": {"invoice": []}}).encode() * 20
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            sock = environ.get("fake_whmcs.socket")
            if sock is not None:
                # Linger 0: close() sends RST instead of FIN, a real "connection reset by peer".
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Content-Length announces all of body; the server closes the socket after a third.
            return [body[: len(body) // 3]]
        headers = [("Content-Type", fault.content_type), ("Content-Length", str(len(fault.body)))]
        if fault.retry_after is not None:
            headers.append(("Retry-After", fault.retry_after))
        start_response(f"{fault.status} {_REASONS.get(fault.status, 'Error')}", headers)
        return [fault.body]

    def _dispatch(self, action: str, params: dict[str, str], environ: dict) -> tuple[int, dict]:
        ip = self.seen_ip or environ.get("REMOTE_ADDR", "")
        # Same order as WHMCS's api.php: ban, then IP/access key, then credentials, then role.
        if ip in self.banned_ips:
            return 403, _error("IP Banned")
        given_key = params.get("accesskey")
        if given_key and self.access_key is not None and given_key != self.access_key:
            return 403, _error("Invalid Access Key")
        key_ok = bool(given_key) and given_key == self.access_key
        if not key_ok and self.allowed_ips is not None and ip not in self.allowed_ips:
            return 403, _error(f"Invalid IP {ip}")
        if "identifier" in params or "username" not in params:
            if params.get("identifier") != self.identifier or params.get("secret") != self.secret:
                return 403, _error("Invalid or missing credentials")
        else:
            # Legacy admin username/password auth, which our fake never accepts.
            return 403, _error("Authentication Failed")
        if self.allowed_actions is not None and action.lower() not in self.allowed_actions:
            return 403, _error(f'Invalid Permissions: API action "{action.lower()}" is not allowed')
        handler = {
            "GetInvoices": self._get_invoices,
            "GetInvoice": self._get_invoice,
            "UpdateInvoice": self._update_invoice,
        }.get(action)
        if handler is None:
            return 200, _error("Command Not Found")
        with self._lock:
            return 200, handler(params)

    # -- actions (called with the lock held) --------------------------------------------------

    def _get_invoices(self, params: dict[str, str]) -> dict[str, Any]:
        start = max(0, _int(params.get("limitstart"), 0))
        limit = _int(params.get("limitnum"), DEFAULT_LIMITNUM)
        if self.ignore_limitnum or limit <= 0:
            limit = DEFAULT_LIMITNUM
        orderby = params.get("orderby", "id").lower()
        if orderby not in ORDER_FIELDS:
            orderby = "id"
        desc = params.get("order", "asc").lower() == "desc"
        status = params.get("status", "")
        userid = _int(params.get("userid"), 0)
        ids = self._view_locked(status, userid, orderby, desc)
        if self.shuffle_ties and orderby != "id":
            ids = self._shuffled_ties_locked(ids, orderby)
        rows = [self._render_locked(self._invoices[i]) for i in ids[start : start + limit]]
        return {
            "result": "success",
            "totalresults": self._id(len(ids)),
            "startnumber": self._id(start),
            "numreturned": self._id(len(rows)),
            # WHMCS's empty page is a bare list, not {"invoice": []}.
            "invoices": {"invoice": rows} if rows else [],
        }

    def _view_locked(self, status: str, userid: int, orderby: str, desc: bool) -> list[int]:
        today = self.clock().date().isoformat()
        key = (status, userid, orderby, desc, today if status == "Overdue" else "")
        view = self._views.get(key)
        if view is not None:
            return view
        rows: Iterable[dict[str, Any]] = self._invoices.values()
        if status == "Overdue":
            rows = (r for r in rows if r["status"] == "Unpaid" and r["duedate"] < today)
        elif status:
            rows = (r for r in rows if r["status"] == status)
        if userid:
            rows = (r for r in rows if r["userid"] == userid)
        sort_key = _SORT_KEYS[orderby]
        if orderby == "id":
            view = [r["id"] for r in rows]  # dict order is id order: ids only grow
            if desc:
                view.reverse()
        else:
            ordered = sorted(rows, key=lambda r: (sort_key(r), r["id"]), reverse=desc)
            view = [r["id"] for r in ordered]
        self._views[key] = view
        return view

    def _shuffled_ties_locked(self, ids: list[int], orderby: str) -> list[int]:
        """Return ``ids`` with each run of equal sort keys in a fresh random order."""
        key = _SORT_KEYS[orderby]
        out: list[int] = []
        run: list[int] = []
        for invoice_id in ids + [0]:
            if run and (
                invoice_id == 0
                or key(self._invoices[invoice_id]) != key(self._invoices[run[0]])
            ):
                random.shuffle(run)
                out.extend(run)
                run = []
            if invoice_id:
                run.append(invoice_id)
        return out

    def _get_invoice(self, params: dict[str, str]) -> dict[str, Any]:
        row = self._invoices.get(_int(params.get("invoiceid"), 0))
        if row is None:
            # WHMCS's GetInvoice says "status", not "result", here (WHMCS.md); clients must
            # tell this answer from an unknown action's {"result": "error", ...}.
            return {"status": "error", "message": "Invoice ID Not Found"}
        paid = row["status"] == "Paid"
        return {
            "result": "success",
            "invoiceid": self._id(row["id"]),
            "invoicenum": row["invoicenum"],
            "userid": self._id(row["userid"]),
            "date": row["date"],
            "duedate": row["duedate"],
            "datepaid": row["datepaid"],
            "lastcaptureattempt": row["last_capture_attempt"],
            "date_refunded": row["date_refunded"],
            "date_cancelled": row["date_cancelled"],
            "subtotal": row["subtotal"],
            "credit": row["credit"],
            "tax": row["tax"],
            "tax2": row["tax2"],
            "total": row["total"],
            "balance": "0.00" if paid else row["total"],
            "taxrate": row["taxrate"],
            "taxrate2": row["taxrate2"],
            "status": row["status"],
            "paymentmethod": row["paymentmethod"],
            "paymethodid": row["paymethodid"],
            "notes": row["notes"],
            "ccgateway": False,
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "items": {
                "item": [
                    {
                        "id": self._id(row["id"]),
                        "type": "Hosting",
                        "relid": self._id(row["id"]),
                        "description": f"Service #{row['id']}",
                        "amount": row["subtotal"],
                        "taxed": row["tax"] not in ("0.00", "-0.00"),
                    }
                ]
            },
            "transactions": "",
        }

    def _update_invoice(self, params: dict[str, str]) -> dict[str, Any]:
        row = self._invoices.get(_int(params.get("invoiceid"), 0))
        if row is None:
            return _error("Invoice ID Not Found")
        for field in ("invoicenum", "status", "notes", "paymentmethod"):
            if field in params and field not in self.dropped_update_fields:
                row[field] = params[field]
        for field in ("date", "duedate"):
            if params.get(field):
                row[field] = params[field][:10]
        if params.get("datepaid"):
            row["datepaid"] = params["datepaid"]
        row["updated_at"] = _fmt_dt(self.clock())
        self._views.clear()
        return {"result": "success", "invoiceid": self._id(row["id"])}

    def _render_locked(self, row: dict[str, Any]) -> dict[str, Any]:
        client = self._clients[row["userid"]]
        out = {
            "id": self._id(row["id"]),
            "userid": self._id(row["userid"]),
            "firstname": client["firstname"],
            "lastname": client["lastname"],
            "companyname": client["companyname"],
        }
        out.update((k, v) for k, v in row.items() if k not in ("id", "userid"))
        # Currency is the client's current one, joined at read time, as WHMCS does.
        out["currencycode"] = client["currencycode"]
        out["currencyprefix"] = client["currencyprefix"]
        out["currencysuffix"] = client["currencysuffix"]
        return out

    def _id(self, value: int) -> int | str:
        return str(value) if self.string_ids else value


# -- HTTP server ------------------------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # Benchmarks hit it from many threads; the default backlog of 5 would refuse connections.
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ["fake_whmcs.socket"] = self.connection  # lets the "reset" fault reset it
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class FakeWhmcsServer:
    """A running fake: ``url`` is the ``…/includes/api.php`` address to give a client."""

    app: FakeWhmcs
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/includes/api.php"


@contextlib.contextmanager
def serve_fake_whmcs(
    app: FakeWhmcs,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[FakeWhmcsServer]:
    """Serve ``app`` in a background thread (port 0 = a free one); stop on exit.

    Args:
        ssl_context: A server-side context to serve HTTPS (e.g. a self-signed certificate, to
            test TLS failures); plain HTTP without it.
    """
    server = make_server(
        host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    # A short poll interval keeps shutdown (and so every test using the fake) fast.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-whmcs", daemon=True
    )
    thread.start()
    try:
        scheme = "https" if ssl_context is not None else "http"
        yield FakeWhmcsServer(app=app, host=host, port=server.server_address[1], scheme=scheme)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- helpers ----------------------------------------------------------------------------------


_REASONS = {
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    406: "Not Acceptable",
}

_FIREWALL_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Access denied</title></head>\n<body>\n"
    "<h1>Access denied</h1>\n<p>The request was blocked by the web application firewall "
    "(rule 949110, inbound anomaly score exceeded).</p>\n</body></html>\n"
)


def _read_params(environ: dict[str, Any]) -> dict[str, str]:
    """Merge query-string and form-body parameters; the body wins, like PHP's $_REQUEST."""
    params = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), True).items()}
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > 0:
        raw = environ["wsgi.input"].read(min(length, _MAX_BODY)).decode("utf-8", "replace")
        params.update({k: v[-1] for k, v in parse_qs(raw, True).items()})
    return params


def _error(message: str) -> dict[str, str]:
    return {"result": "error", "message": message}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def _money_str(value: Any) -> str:
    return f"{Decimal(str(value)).quantize(Decimal('0.01'))}"


def _fmt_d(value: dt.date | str | None) -> str:
    if value is None or value == "":
        return ZERO_DATE
    return value if isinstance(value, str) else value.isoformat()[:10]


def _fmt_dt(value: dt.datetime | dt.date | str | None) -> str:
    if value is None or value == "":
        return ZERO_DATETIME
    if isinstance(value, str):
        return value
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    return value.replace(microsecond=0).isoformat(" ")


_SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "id": lambda r: r["id"],
    "invoicenumber": lambda r: r["invoicenum"],
    "date": lambda r: r["date"],
    "duedate": lambda r: r["duedate"],
    "total": lambda r: Decimal(r["total"]),
    "status": lambda r: r["status"],
}


def _to_xml(action: str, payload: dict[str, Any]) -> str:
    """Render an answer the way WHMCS does without ``responsetype=json``."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<whmcsapi>",
        f"<action>{escape(action.lower())}</action>",
    ]
    _xml_into(parts, payload)
    parts.append("</whmcsapi>")
    return "\n".join(parts)


def _xml_into(parts: list[str], value: Any) -> None:
    for key, item in value.items():
        if isinstance(item, dict):
            parts.append(f"<{key}>")
            _xml_into(parts, item)
            parts.append(f"</{key}>")
        elif isinstance(item, list):
            for element in item:
                parts.append(f"<{key}>")
                if isinstance(element, dict):
                    _xml_into(parts, element)
                else:
                    parts.append(escape(str(element)))
                parts.append(f"</{key}>")
        else:
            text = "" if item is None else str(item).lower() if isinstance(item, bool) else item
            parts.append(f"<{key}>{escape(str(text))}</{key}>")


def main(argv: list[str] | None = None) -> None:
    """Run a seeded fake WHMCS until interrupted."""
    parser = argparse.ArgumentParser(description="Run a fake WHMCS API for demos and manual tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--seed-count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--identifier", default="fake-identifier")
    parser.add_argument("--secret", default="fake-secret")
    args = parser.parse_args(argv)
    app = FakeWhmcs(args.identifier, args.secret)
    app.seed(args.seed_count, seed=args.seed)
    with serve_fake_whmcs(app, args.host, args.port) as server:
        print(f"fake WHMCS with {len(app)} invoices at {server.url}", flush=True)
        print(f"identifier={args.identifier} secret={args.secret}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
