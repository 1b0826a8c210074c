"""The fake WHMCS answers like WHMCS.md says the real one does."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections import Counter
from decimal import Decimal

import pytest
import requests

from coordinator.demo.fake_whmcs import DEFAULT_LIMITNUM, FakeWhmcs, serve_fake_whmcs

IDENT, SECRET = "ident-abc", "secret-xyz"
NOW = dt.datetime(2026, 6, 15, 12, 0, 0)
ROW_KEYS = {
    "id", "userid", "firstname", "lastname", "companyname", "invoicenum", "date", "duedate",
    "datepaid", "last_capture_attempt", "date_refunded", "date_cancelled", "subtotal", "credit",
    "tax", "tax2", "total", "taxrate", "taxrate2", "status", "paymentmethod", "paymethodid",
    "notes", "created_at", "updated_at", "currencycode", "currencyprefix", "currencysuffix",
}  # fmt: skip


@pytest.fixture
def fake():
    return FakeWhmcs(IDENT, SECRET, clock=lambda: NOW)


@pytest.fixture
def server(fake):
    with serve_fake_whmcs(fake) as running:
        yield running


def api(server, action, json=True, **params):
    form = {"action": action, "identifier": IDENT, "secret": SECRET, **params}
    if json:
        form["responsetype"] = "json"
    return requests.post(server.url, data=form, timeout=10)


def ids(response):
    invoices = response.json()["invoices"]
    return [row["id"] for row in invoices["invoice"]] if invoices else []


def test_get_invoices_shape(fake, server):
    fake.add_invoice(currencycode="USD", subtotal="15.95", date=dt.date(2016, 1, 1))
    response = api(server, "GetInvoices")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["result"] == "success"
    assert (body["totalresults"], body["startnumber"], body["numreturned"]) == (1, 0, 1)
    (row,) = body["invoices"]["invoice"]
    assert set(row) == ROW_KEYS
    assert row["id"] == 1 and isinstance(row["userid"], int)
    assert row["subtotal"] == "15.95" and row["total"] == "15.95" and row["credit"] == "0.00"
    assert row["datepaid"] == "0000-00-00 00:00:00"
    assert row["date_refunded"] == "0000-00-00 00:00:00"
    assert row["duedate"] == "2016-01-01" and row["date"] == "2016-01-01"
    assert (row["currencycode"], row["currencyprefix"], row["currencysuffix"]) == (
        "USD", "$", " USD",
    )  # fmt: skip


def test_empty_page_is_a_bare_list(fake, server):
    fake.seed(3)
    body = api(server, "GetInvoices", limitstart=3).json()
    assert body["invoices"] == []
    assert (body["totalresults"], body["startnumber"], body["numreturned"]) == (3, 3, 0)


def test_default_limitnum_and_paging(fake, server):
    fake.seed(60)
    assert ids(api(server, "GetInvoices")) == list(range(1, 26))
    assert ids(api(server, "GetInvoices", limitstart=50, limitnum=30)) == list(range(51, 61))


def test_ignore_limitnum(fake, server):
    fake.ignore_limitnum = True
    fake.seed(60)
    assert len(ids(api(server, "GetInvoices", limitnum=50))) == DEFAULT_LIMITNUM


def test_string_ids(fake, server):
    fake.string_ids = True
    fake.seed(2)
    body = api(server, "GetInvoices").json()
    assert body["totalresults"] == "2" and body["numreturned"] == "2"
    assert [r["id"] for r in body["invoices"]["invoice"]] == ["1", "2"]


def test_xml_without_responsetype(fake, server):
    fake.seed(3)
    response = api(server, "GetInvoices", json=False)
    assert "xml" in response.headers["Content-Type"]
    root = ET.fromstring(response.content)
    assert root.tag == "whmcsapi"
    assert root.findtext("result") == "success"
    assert root.findtext("totalresults") == "3"
    assert [e.findtext("id") for e in root.find("invoices").findall("invoice")] == ["1", "2", "3"]


def test_query_string_and_body_are_merged(fake, server):
    fake.seed(30)
    response = requests.post(
        server.url + "?action=GetInvoices&responsetype=json&limitnum=3",
        data={"identifier": IDENT, "secret": SECRET, "limitstart": 5},
        timeout=10,
    )
    assert ids(response) == [6, 7, 8]


@pytest.mark.parametrize(
    ("setup", "params", "message"),
    [
        ({}, {"secret": "wrong"}, "Invalid or missing credentials"),
        ({}, {"identifier": None, "secret": None}, "Invalid or missing credentials"),
        ({}, {"identifier": None, "username": "admin", "password": "x"}, "Authentication Failed"),
        (
            {"allowed_actions": ["GetInvoice"]},
            {},
            'Invalid Permissions: API action "getinvoices" is not allowed',
        ),
        ({"allowed_ips": ["198.51.100.1"]}, {}, "Invalid IP 127.0.0.1"),
        ({"access_key": "k1"}, {"accesskey": "k2"}, "Invalid Access Key"),
        ({"banned_ips": ["127.0.0.1"]}, {}, "IP Banned"),
    ],
)
def test_access_errors_are_403_with_whmcs_messages(server, fake, setup, params, message):
    for name, value in setup.items():
        setattr(fake, name, set(v.lower() for v in value) if name == "allowed_actions" else value)
    form = {"action": "GetInvoices", "identifier": IDENT, "secret": SECRET, "responsetype": "json"}
    form.update(params)
    form = {k: v for k, v in form.items() if v is not None}
    response = requests.post(server.url, data=form, timeout=10)
    assert response.status_code == 403
    assert response.json() == {"result": "error", "message": message}


def test_seen_ip_override(fake, server):
    fake.allowed_ips = {"198.51.100.1"}
    fake.seen_ip = "203.0.113.7"
    assert api(server, "GetInvoices").json()["message"] == "Invalid IP 203.0.113.7"
    fake.seen_ip = "198.51.100.1"
    assert api(server, "GetInvoices").json()["result"] == "success"


def test_access_key_bypasses_ip_restriction(fake, server):
    fake.allowed_ips = set()
    fake.access_key = "k1"
    assert api(server, "GetInvoices", accesskey="k1").status_code == 200


def test_errors_inside_an_action_are_http_200(fake, server):
    response = api(server, "GetInvoice", invoiceid=99)
    assert response.status_code == 200
    # GetInvoice's own shape for a missing invoice: "status", not "result" (WHMCS.md).
    assert response.json() == {"status": "error", "message": "Invoice ID Not Found"}
    assert api(server, "UpdateInvoice", invoiceid=99).json() == {
        "result": "error", "message": "Invoice ID Not Found"}
    assert api(server, "NoSuchThing").json() == {"result": "error", "message": "Command Not Found"}


def test_shuffled_ties_keep_the_order_between_keys(fake, server):
    fake.shuffle_ties = True
    for i in range(30):
        fake.add_invoice(status="Paid", invoicenum="" if i % 3 else f"N-{i:03d}")
    orders = set()
    for _ in range(5):
        rows = api(server, "GetInvoices", orderby="invoicenumber", limitnum=100).json()
        nums = [r["invoicenum"] for r in rows["invoices"]["invoice"]]
        assert nums == sorted(nums)  # empty invoicenum first, then by number
        orders.add(tuple(r["id"] for r in rows["invoices"]["invoice"] if not r["invoicenum"]))
    assert len(orders) > 1  # ties come back in another order: do not page through them


def test_dropped_update_field_is_answered_success_but_not_stored(fake, server):
    iid = fake.add_invoice(status="Paid")
    fake.dropped_update_fields = {"invoicenum"}
    answer = api(server, "UpdateInvoice", invoiceid=iid, invoicenum="INV-1", notes="n")
    assert answer.json() == {"result": "success", "invoiceid": iid}
    row = api(server, "GetInvoice", invoiceid=iid).json()
    assert (row["invoicenum"], row["notes"]) == ("", "n")


def test_orderby_and_order(fake, server):
    fake.seed(80, seed=5)
    snapshot = fake.invoices_snapshot()
    by_total = api(server, "GetInvoices", orderby="total", order="desc", limitnum=100).json()
    totals = [Decimal(r["total"]) for r in by_total["invoices"]["invoice"]]
    assert totals == sorted(totals, reverse=True) and len(totals) == 80
    by_due = ids(api(server, "GetInvoices", orderby="duedate", limitnum=100))
    due = {r["id"]: r["duedate"] for r in snapshot}
    assert [due[i] for i in by_due] == sorted(due.values())
    assert ids(api(server, "GetInvoices", order="desc", limitnum=3)) == [80, 79, 78]
    by_status = api(server, "GetInvoices", orderby="status", limitnum=100).json()
    statuses = [r["status"] for r in by_status["invoices"]["invoice"]]
    assert statuses == sorted(statuses)


def test_status_userid_and_overdue_filters(fake, server):
    a = fake.add_client("EUR")
    b = fake.add_client("USD")
    fake.add_invoice(userid=a, status="Unpaid", duedate=dt.date(2026, 6, 1))  # overdue
    fake.add_invoice(userid=a, status="Unpaid", duedate=dt.date(2026, 7, 1))  # not yet due
    fake.add_invoice(userid=b, status="Paid", duedate=dt.date(2026, 6, 1))
    fake.add_invoice(userid=b, status="Unpaid", duedate=dt.date(2026, 6, 14))  # overdue
    assert ids(api(server, "GetInvoices", status="Overdue")) == [1, 4]
    assert ids(api(server, "GetInvoices", status="Unpaid")) == [1, 2, 4]
    assert ids(api(server, "GetInvoices", status="Paid")) == [3]
    assert ids(api(server, "GetInvoices", userid=b)) == [3, 4]
    assert api(server, "GetInvoices", status="Overdue").json()["totalresults"] == 2


def test_get_invoice_shape(fake, server):
    fake.add_invoice(subtotal="10.00", tax="2.00", status="Unpaid")
    body = api(server, "GetInvoice", invoiceid=1).json()
    assert body["result"] == "success" and body["invoiceid"] == 1
    assert body["total"] == "12.00" and body["balance"] == "12.00"
    assert "currencycode" not in body  # GetInvoice does not report the currency
    assert body["items"]["item"][0]["amount"] == "10.00"
    assert body["transactions"] == ""


def test_update_invoice_persists_invoicenum(fake, server):
    fake.seed(3)
    response = api(server, "UpdateInvoice", invoiceid=2, invoicenum="INV-2026-000051")
    assert response.json() == {"result": "success", "invoiceid": 2}
    assert api(server, "GetInvoice", invoiceid=2).json()["invoicenum"] == "INV-2026-000051"
    listed = api(server, "GetInvoices").json()["invoices"]["invoice"][1]
    assert listed["invoicenum"] == "INV-2026-000051"
    assert listed["updated_at"] == "2026-06-15 12:00:00"
    api(server, "UpdateInvoice", invoiceid=2, status="Cancelled")
    assert ids(api(server, "GetInvoices", status="Cancelled")) == [2]


def test_currency_is_the_clients_current_one(fake, server):
    client = fake.add_client("EUR")
    fake.add_invoice(userid=client)
    fake.set_client_currency(client, "GBP")
    row = api(server, "GetInvoices").json()["invoices"]["invoice"][0]
    assert (row["currencycode"], row["currencyprefix"]) == ("GBP", "£")


def test_set_status_and_calls_counter(fake, server):
    fake.add_invoice(status="Unpaid")
    fake.set_status(1, "Paid")
    row = fake.invoices_snapshot()[0]
    assert row["status"] == "Paid" and row["datepaid"] == "2026-06-15 12:00:00"
    api(server, "GetInvoices")
    api(server, "getinvoice", invoiceid=1)
    api(server, "GetInvoice", invoiceid=1)
    assert fake.calls == Counter({"GetInvoices": 1, "GetInvoice": 2})


def test_seed_distribution_and_consistency():
    fake = FakeWhmcs(IDENT, SECRET)
    ids_ = fake.seed(5000, seed=42)
    assert ids_ == list(range(1, 5001))
    rows = fake.invoices_snapshot()
    statuses = Counter(r["status"] for r in rows)
    expected = {"Paid", "Unpaid", "Cancelled", "Refunded", "Draft", "Payment Pending"}
    assert set(statuses) == expected
    assert 0.6 < statuses["Paid"] / 5000 < 0.85
    assert {r["currencycode"] for r in rows} == {"EUR", "USD", "GBP"}
    per_client = {}
    for r in rows:
        assert per_client.setdefault(r["userid"], r["currencycode"]) == r["currencycode"]
        d = {k: Decimal(r[k]) for k in ("subtotal", "tax", "tax2", "credit", "total")}
        assert d["total"] == d["subtotal"] + d["tax"] + d["tax2"] - d["credit"]
        assert r["date"] <= r["duedate"]
        if r["status"] in ("Paid", "Refunded"):
            assert r["datepaid"] >= r["created_at"]
        else:
            assert r["datepaid"] == "0000-00-00 00:00:00"
    negative = [r for r in rows if Decimal(r["total"]) < 0]
    assert 40 < len(negative) < 200 and all(r["status"] == "Paid" for r in negative)
    assert any(Decimal(r["credit"]) > 0 for r in rows)
    assert any(Decimal(r["tax2"]) != 0 for r in rows)
    numbers = [r["invoicenum"] for r in rows if r["invoicenum"]]
    assert len(numbers) == len(set(numbers))
    assert any(r["status"] == "Paid" and not r["invoicenum"] for r in rows)
    dates = [r["date"] for r in rows]
    assert dates == sorted(dates)  # ids grow with the date
    again = FakeWhmcs(IDENT, SECRET)
    again.seed(5000, seed=42)
    assert again.invoices_snapshot() == rows


def test_fault_nth_and_times(fake, server):
    fake.inject_fault("status", status=500, nth=2)
    assert api(server, "GetInvoices").status_code == 200
    assert api(server, "GetInvoices").status_code == 500
    assert api(server, "GetInvoices").status_code == 200
    fake.inject_fault("html", times=2)
    first = api(server, "GetInvoices")
    assert first.status_code == 403 and first.text.startswith("<!DOCTYPE html>")
    assert api(server, "GetInvoices").status_code == 403
    assert api(server, "GetInvoices").status_code == 200
    fake.inject_fault("status", status=503, retry_after=7)
    assert api(server, "GetInvoices").headers["Retry-After"] == "7"
    fake.clear_faults()
    assert api(server, "GetInvoices").status_code == 200


def test_fault_delay_then_normal_answer(fake, server):
    fake.inject_fault("delay", delay=0.05, times=1)
    assert api(server, "GetInvoices").json()["result"] == "success"


def test_fault_reset_breaks_the_response(fake, server):
    fake.inject_fault("reset", times=1)
    with pytest.raises(requests.exceptions.RequestException):
        api(server, "GetInvoices")
    assert api(server, "GetInvoices").status_code == 200


def test_unknown_fault_kind_is_refused(fake):
    with pytest.raises(ValueError):
        fake.inject_fault("explode")


def test_concurrent_requests(fake, server):
    from concurrent.futures import ThreadPoolExecutor

    fake.seed(500)
    with ThreadPoolExecutor(16) as pool:
        pages = list(
            pool.map(
                lambda s: ids(api(server, "GetInvoices", limitstart=s, limitnum=50)),
                range(0, 500, 50),
            )
        )
    assert [i for page in pages for i in page] == list(range(1, 501))
