"""WhmcsClient against the fake WHMCS over real HTTP on loopback."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
import ssl
from decimal import Decimal

import pytest

import agent
from agent import (
    InvoicePage,
    WhmcsAccessKeyError,
    WhmcsApiError,
    WhmcsAuthError,
    WhmcsBadResponseError,
    WhmcsClient,
    WhmcsConnectionError,
    WhmcsError,
    WhmcsInvoice,
    WhmcsInvoiceNotFoundError,
    WhmcsIpBannedError,
    WhmcsIpNotAllowedError,
    WhmcsPermissionError,
    WhmcsTimeoutError,
    WhmcsTlsError,
)
from agent._exceptions import AgentError
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs

IDENT = "ident-Xq7rT9vLm2"
SECRET = "secret-Pz4kW8nB3s"
CLIENT_DATA_FIELDS = ("firstname", "lastname", "companyname", "userid", "notes", "paymentmethod")


@pytest.fixture
def fake():
    return FakeWhmcs(IDENT, SECRET)


@pytest.fixture
def server(fake):
    with serve_fake_whmcs(fake) as running:
        yield running


def make_client(server, **kwargs) -> WhmcsClient:
    kwargs.setdefault("backoff_factor", 0)
    kwargs.setdefault("timeout", (2, 5))
    return WhmcsClient(
        server.url, kwargs.pop("identifier", IDENT), kwargs.pop("secret", SECRET), **kwargs
    )


def raw_answer(fake, payload, status=200, times=1):
    """Make the fake answer the next request(s) with exactly this JSON body."""
    body = payload if isinstance(payload, str) else json.dumps(payload)
    fake.inject_fault(
        "status", status=status, body=body, content_type="application/json", times=times
    )


# -- public surface ------------------------------------------------------------------------


def test_all_is_sorted_and_exported():
    assert agent.__all__ == sorted(agent.__all__)
    for name in agent.__all__:
        assert hasattr(agent, name)


def test_error_codes_are_distinct_and_every_error_is_an_agent_error():
    classes = [getattr(agent, n) for n in agent.__all__ if n.startswith("Whmcs")]
    errors = [c for c in classes if isinstance(c, type) and issubclass(c, Exception)]
    assert len(errors) == 13
    codes = [c.code for c in errors]
    assert len(set(codes)) == len(codes)
    assert all(issubclass(c, WhmcsError) and issubclass(c, AgentError) for c in errors)


def test_repr_hides_credentials(server):
    client = make_client(server, access_key="accesskey-9Tq")
    text = repr(client)
    assert server.url in text
    assert SECRET not in text and IDENT not in text and "accesskey-9Tq" not in text


# -- paging --------------------------------------------------------------------------------


def test_iter_invoices_returns_every_invoice_once_in_id_order(fake, server):
    fake.seed(237, seed=3)
    client = make_client(server)
    got = [inv.id for inv in client.iter_invoices(50)]
    assert got == [row["id"] for row in fake.invoices_snapshot()]
    # 50+50+50+50+37, then the empty page that ends the loop.
    assert client.calls == 6
    assert fake.calls["GetInvoices"] == 6


def test_iter_invoices_when_whmcs_ignores_limitnum(fake, server):
    fake.ignore_limitnum = True
    fake.seed(237, seed=3)
    client = make_client(server)
    got = [inv.id for inv in client.iter_invoices(100)]
    assert got == list(range(1, 238))
    assert client.calls == 11  # 25 rows per page whatever we ask: 10 pages + the empty one


def test_get_invoices_page_counters(fake, server):
    fake.seed(30)
    page = make_client(server).get_invoices(10, 5)
    assert isinstance(page, InvoicePage)
    assert [i.id for i in page.invoices] == [11, 12, 13, 14, 15]
    assert (page.totalresults, page.startnumber, page.numreturned) == (30, 10, 5)


def test_invoices_added_while_paging_are_included(fake, server):
    fake.seed(60)
    client = make_client(server)
    got = []
    for invoice in client.iter_invoices(25):
        got.append(invoice.id)
        if invoice.id == 1:
            for _ in range(7):
                fake.add_invoice(subtotal="10.00")
    assert got == list(range(1, 68))


def test_descending_paging_with_insertions_yields_no_duplicates(fake, server):
    fake.seed(60)
    client = make_client(server)
    got = []
    for invoice in client.iter_invoices(20, order="desc"):
        got.append(invoice.id)
        if len(got) == 1:
            fake.add_invoice()
            fake.add_invoice()  # pushes two already-seen rows into the next page
    assert len(got) == len(set(got))
    assert set(range(1, 61)) <= set(got)


def test_status_filter_is_passed_through(fake, server):
    fake.seed(200, seed=1)
    client = make_client(server)
    paid = [i for i in client.iter_invoices(40, status="Paid")]
    expected = [r["id"] for r in fake.invoices_snapshot() if r["status"] == "Paid"]
    assert [i.id for i in paid] == expected
    assert {i.status for i in paid} == {"Paid"}


def test_whmcs_ignoring_limitstart_is_reported_not_looped(fake, server):
    fake.seed(3)
    page = {
        "result": "success",
        "totalresults": 3,
        "startnumber": 0,
        "numreturned": 3,
        "invoices": {"invoice": fake.invoices_snapshot()},
    }
    raw_answer(fake, page, times=5)
    with pytest.raises(WhmcsBadResponseError, match="ignores limitstart"):
        list(make_client(server).iter_invoices(3))


@pytest.mark.parametrize("empty", [[], "", {"invoice": []}, None, {}])
def test_empty_page_shapes(fake, server, empty):
    raw_answer(
        fake,
        {
            "result": "success",
            "totalresults": 0,
            "startnumber": 0,
            "numreturned": 0,
            "invoices": empty,
        },
    )
    page = make_client(server).get_invoices()
    assert page.invoices == ()
    assert page.totalresults == 0


def test_real_empty_answer_of_the_fake(server):
    client = make_client(server)
    assert list(client.iter_invoices(10)) == []
    assert client.calls == 1


def test_string_ids_and_counters(fake, server):
    fake.string_ids = True
    fake.seed(12)
    client = make_client(server)
    page = client.get_invoices(0, 5)
    assert [i.id for i in page.invoices] == [1, 2, 3, 4, 5]
    assert (page.totalresults, page.numreturned) == (12, 5)
    assert [i.id for i in client.iter_invoices(5)] == list(range(1, 13))
    assert client.get_invoice(7).id == 7


# -- parsing -------------------------------------------------------------------------------


def test_parsed_invoice_fields_zero_dates_and_exact_money(fake, server):
    fake.add_invoice(
        currencycode="EUR",
        invoicenum="",
        date=dt.date(2026, 3, 1),
        duedate="0000-00-00",
        subtotal="0.10",
        tax="0.20",
        tax2="0.00",
        credit="0.00",
        status="Unpaid",
    )
    fake.add_invoice(
        currencycode="GBP",
        invoicenum="INV-2026-000007",
        date=dt.date(2026, 3, 2),
        duedate=dt.date(2026, 3, 16),
        datepaid=dt.datetime(2026, 3, 3, 14, 6, 34),
        subtotal="12345678901234.56",
        tax="2345678901234.57",
        tax2="0.01",
        credit="0.03",
        status="Paid",
        updated_at="2026-03-03 14:07:17",
    )
    first, second = make_client(server).get_invoices().invoices
    assert first == WhmcsInvoice(
        id=1,
        invoicenum="",
        date=dt.date(2026, 3, 1),
        duedate=None,
        datepaid=None,
        status="Unpaid",
        subtotal=Decimal("0.10"),
        credit=Decimal("0.00"),
        tax=Decimal("0.20"),
        tax2=Decimal("0.00"),
        total=Decimal("0.30"),
        currencycode="EUR",
        updated_at=first.updated_at,
    )
    assert first.total == first.subtotal + first.tax  # exact: 0.1 + 0.2 would not be in floats
    assert second.invoicenum == "INV-2026-000007"
    assert second.datepaid == dt.datetime(2026, 3, 3, 14, 6, 34)
    assert second.updated_at == dt.datetime(2026, 3, 3, 14, 7, 17)
    assert second.total == Decimal("14691357802469.11")
    assert second.currencycode == "GBP"


def test_negative_credit_note_totals(fake, server):
    fake.add_invoice(subtotal="-100.00", tax="-22.00", status="Paid")
    (inv,) = make_client(server).get_invoices().invoices
    assert inv.total == Decimal("-122.00")


def test_client_data_never_leaves_the_parser(fake, server):
    fake.add_client("EUR", firstname="Zebedee", lastname="Quuxley", companyname="Hushco")
    fake.add_invoice(userid=1, notes="private-note-Vw3", paymentmethod="gateway-Kj8")
    client = make_client(server)
    invoices = list(client.get_invoices().invoices) + [client.get_invoice(1)]
    names = {f.name for f in dataclasses.fields(WhmcsInvoice)}
    assert names.isdisjoint(CLIENT_DATA_FIELDS)
    for inv in invoices:
        text = repr(inv) + str(dataclasses.asdict(inv))
        for secret in ("Zebedee", "Quuxley", "Hushco", "private-note-Vw3", "gateway-Kj8"):
            assert secret not in text
        with pytest.raises(AttributeError):
            inv.firstname  # noqa: B018 - slots: no hidden attribute either


def test_malformed_field_error_names_field_not_client_data(fake, server):
    row = {
        "id": 9,
        "firstname": "Zebedee",
        "companyname": "Hushco",
        "total": "12,50",
        "status": "Paid",
        "date": "2026-01-01",
    }
    raw_answer(fake, {"result": "success", "invoices": {"invoice": [row]}})
    with pytest.raises(WhmcsBadResponseError) as info:
        make_client(server).get_invoices()
    assert "'total'" in str(info.value) and "invoice 9" in str(info.value)
    assert "Zebedee" not in str(info.value) and "Hushco" not in str(info.value)


def test_get_invoice_and_update_invoice_round_trip(fake, server):
    fake.seed(5)
    client = make_client(server)
    assert client.update_invoice(3, invoicenum="INV-2026-000051") == 3
    assert client.get_invoice(3).invoicenum == "INV-2026-000051"
    assert fake.invoices_snapshot()[2]["invoicenum"] == "INV-2026-000051"
    single = client.get_invoice(4)
    listed = client.get_invoices(3, 1).invoices[0]
    # GetInvoice has no currency; everything else must agree with GetInvoices.
    assert single.currencycode == ""
    assert dataclasses.replace(single, currencycode=listed.currencycode) == listed


# -- errors from the fake's real answers ----------------------------------------------------


def assert_safe(exc: WhmcsError, *also_secret: str):
    text = str(exc) + repr(exc.args)
    for value in (SECRET, IDENT, *also_secret):
        assert value not in text
    assert exc.code.startswith("whmcs")


def test_bad_secret(server):
    with pytest.raises(WhmcsAuthError) as info:
        make_client(server, secret="secret-WRONG-9876").get_invoices()
    assert info.value.code == "whmcs_auth" and info.value.status_code == 403
    assert "Manage API Credentials" in str(info.value)
    assert_safe(info.value, "secret-WRONG-9876")


def test_legacy_authentication_failed_message(fake, server):
    raw_answer(fake, {"result": "error", "message": "Authentication Failed"}, status=403)
    with pytest.raises(WhmcsAuthError, match="Authentication Failed"):
        make_client(server).get_invoices()


def test_role_lacking_the_action(fake, server):
    fake.allowed_actions = {"getinvoice", "updateinvoice"}
    client = make_client(server)
    with pytest.raises(WhmcsPermissionError) as info:
        client.get_invoices()
    assert info.value.action == "GetInvoices"
    assert '"GetInvoices"' in str(info.value) and "API Role" in str(info.value)
    assert_safe(info.value)
    fake.seed(1)  # the role still allows the other actions
    assert client.get_invoice(1).id == 1


def test_ip_not_allowed_names_the_ip_whmcs_saw(fake, server):
    fake.allowed_ips = {"198.51.100.10"}
    fake.seen_ip = "203.0.113.7"
    with pytest.raises(WhmcsIpNotAllowedError) as info:
        make_client(server).get_invoices()
    assert info.value.ip == "203.0.113.7"
    assert "203.0.113.7" in str(info.value) and "API IP Access Restriction" in str(info.value)
    assert info.value.code == "whmcs_ip_not_allowed"
    assert_safe(info.value)


def test_ip_allowed_from_loopback(fake, server):
    fake.allowed_ips = {"127.0.0.1"}
    assert make_client(server).get_invoices().invoices == ()


def test_wrong_access_key(fake, server):
    fake.access_key = "right-key-5521"
    fake.allowed_ips = set()
    with pytest.raises(WhmcsAccessKeyError) as info:
        make_client(server, access_key="wrong-key-7788").get_invoices()
    assert "configuration.php" in str(info.value)
    assert_safe(info.value, "wrong-key-7788", "right-key-5521")
    # The right key lets the caller in despite the IP restriction.
    assert make_client(server, access_key="right-key-5521").get_invoices().invoices == ()


def test_banned_ip(fake, server):
    fake.banned_ips = {"127.0.0.1"}
    with pytest.raises(WhmcsIpBannedError) as info:
        make_client(server).get_invoices()
    assert "Banned" in str(info.value) and info.value.code == "whmcs_ip_banned"


def test_action_error_inside_http_200(server):
    with pytest.raises(WhmcsApiError) as info:
        make_client(server).get_invoice(424242)
    assert info.value.whmcs_message == "Invoice ID Not Found"
    assert info.value.status_code == 200 and info.value.action == "GetInvoice"
    assert_safe(info.value)


def test_firewall_html_page(fake, server):
    fake.inject_fault("html")
    with pytest.raises(WhmcsBadResponseError) as info:
        make_client(server).get_invoices()
    exc = info.value
    assert exc.status_code == 403 and "HTML page" in str(exc)
    assert "Access denied" in exc.snippet and "<" not in exc.snippet
    assert len(exc.snippet) <= 160
    assert_safe(exc)


def test_http_500(fake, server):
    fake.inject_fault("status", status=500)
    with pytest.raises(WhmcsBadResponseError) as info:
        make_client(server).get_invoices()
    assert info.value.status_code == 500 and "HTTP 500" in str(info.value)


def test_body_echoing_the_secret_is_scrubbed(fake, server):
    fake.inject_fault(
        "status", status=502, body=f"bad gateway for secret={SECRET}&identifier={IDENT}"
    )
    with pytest.raises(WhmcsBadResponseError) as info:
        make_client(server).get_invoices()
    assert_safe(info.value)
    assert "***" in info.value.snippet


def test_xml_answer_is_reported(fake, server):
    body = '<?xml version="1.0"?><whmcsapi><result>success</result></whmcsapi>'
    fake.inject_fault("status", status=200, body=body, content_type="text/xml")
    with pytest.raises(WhmcsBadResponseError, match="XML"):
        make_client(server).get_invoices()


def test_timeout(fake, server):
    fake.inject_fault("delay", delay=1.5, times=1)
    with pytest.raises(WhmcsTimeoutError) as info:
        make_client(server, timeout=(2, 0.3), retries=0).get_invoices()
    assert isinstance(info.value, WhmcsConnectionError)
    assert info.value.code == "whmcs_timeout"
    assert_safe(info.value)


def test_connection_reset_mid_response(fake, server):
    fake.seed(3)
    fake.inject_fault("reset", times=1)
    client = make_client(server, retries=0)
    with pytest.raises(WhmcsConnectionError) as info:
        client.get_invoices()
    assert not isinstance(info.value, WhmcsTimeoutError)
    assert_safe(info.value)
    assert len(client.get_invoices().invoices) == 3  # the next call is served normally


def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = WhmcsClient(f"http://127.0.0.1:{port}/includes/api.php", IDENT, SECRET, retries=0)
    with pytest.raises(WhmcsConnectionError) as info:
        client.get_invoices()
    assert info.value.code == "whmcs_connection"
    assert_safe(info.value)


def test_https_url_to_plain_http_port(server):
    url = server.url.replace("http://", "https://")
    with pytest.raises(WhmcsTlsError) as info:
        WhmcsClient(url, IDENT, SECRET, retries=0).get_invoices()
    assert info.value.code == "whmcs_tls" and "https" in str(info.value)
    assert_safe(info.value)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)


def test_self_signed_certificate(fake, self_signed):
    context, ca_path = self_signed
    fake.seed(2)
    with serve_fake_whmcs(fake, ssl_context=context) as tls:
        url = f"https://localhost:{tls.port}/includes/api.php"
        with pytest.raises(WhmcsTlsError) as info:
            WhmcsClient(url, IDENT, SECRET, retries=0).get_invoices()
        assert "certificate" in str(info.value)
        assert_safe(info.value)
        # Trusting that certificate explicitly works.
        trusted = WhmcsClient(url, IDENT, SECRET, retries=0, verify=ca_path)
        assert len(trusted.get_invoices().invoices) == 2


# -- retries -------------------------------------------------------------------------------


def test_retries_on_503_then_succeeds(fake, server):
    fake.seed(4)
    fake.inject_fault("status", status=503, times=2, retry_after=0)
    client = make_client(server, retries=3)
    assert len(client.get_invoices().invoices) == 4
    assert fake.calls["GetInvoices"] == 3  # two 503s, then the answer
    assert client.calls == 1  # one API call from the caller's point of view


def test_retries_on_429(fake, server):
    fake.inject_fault("status", status=429, times=1, retry_after=0)
    assert make_client(server, retries=2).get_invoices().invoices == ()
    assert fake.calls["GetInvoices"] == 2


def test_503_after_retries_exhausted_is_classified(fake, server):
    fake.inject_fault(
        "status", status=503, body="<html>Service Unavailable</html>", content_type="text/html"
    )
    with pytest.raises(WhmcsBadResponseError) as info:
        make_client(server, retries=2).get_invoices()
    assert info.value.status_code == 503
    assert fake.calls["GetInvoices"] == 3


def test_auth_errors_are_not_retried(server, fake):
    with pytest.raises(WhmcsAuthError):
        make_client(server, secret="nope-nope", retries=3).get_invoices()
    assert fake.calls["GetInvoices"] == 1


def test_injected_session_is_used(fake, server):
    import requests

    class CountingSession(requests.Session):
        def __init__(self):
            super().__init__()
            self.posts = []

        def post(self, url, **kwargs):
            self.posts.append(dict(kwargs["data"]))
            return super().post(url, **kwargs)

    session = CountingSession()
    client = WhmcsClient(server.url, IDENT, SECRET, "ak-1234", session=session)
    fake.access_key = "ak-1234"
    client.get_invoices(5, 10, status="Unpaid", order="desc")
    (form,) = session.posts
    assert form == {
        "action": "GetInvoices",
        "identifier": IDENT,
        "secret": SECRET,
        "responsetype": "json",
        "accesskey": "ak-1234",
        "limitstart": 5,
        "limitnum": 10,
        "status": "Unpaid",
        "orderby": "id",
        "order": "desc",
    }
    client.close()  # an injected session belongs to the caller
    assert session.adapters


def test_redirect_is_reported_not_followed(fake, server):
    fake.inject_fault("status", status=301, body="", content_type="text/html")
    with pytest.raises(WhmcsBadResponseError, match="redirect"):
        make_client(server).get_invoices()


# -- reading only what is new --------------------------------------------------------------


def test_iter_invoices_above_yields_the_new_ones_even_when_rows_are_deleted_meanwhile(
    fake, server
):
    ids = [fake.add_invoice(status="Paid") for _ in range(60)]
    client = make_client(server)
    got = []
    for invoice in client.iter_invoices_above(10, 7):
        got.append(invoice.id)
        if len(got) == 7:  # an admin deletes newer invoices while we page
            fake.delete_invoice(ids[-2])
            fake.delete_invoice(ids[-4])
            fake.delete_invoice(ids[-6])
    assert sorted(got) == [i for i in ids if i > 10]
    assert len(got) == len(set(got))


def test_iter_invoices_above_costs_one_call_when_nothing_is_new(fake, server):
    fake.seed(500)
    client = make_client(server)
    assert list(client.iter_invoices_above(500, 100)) == []
    assert client.calls == 1


def test_iter_unnumbered_finds_each_once_though_ties_come_in_any_order(fake, server):
    fake.shuffle_ties = True
    blank = [fake.add_invoice(status="Paid") for _ in range(40)]
    for n in range(20):
        fake.add_invoice(status="Paid", invoicenum=f"N-{n:04d}")
    fake.add_invoice(status="Unpaid")  # another status: not asked for
    client = make_client(server)
    got = []
    for invoice in client.iter_unnumbered("Paid", 7):
        got.append(invoice.id)
        if invoice.id % 3:  # the caller numbers two in three; the others stay unnumbered
            fake.set_invoicenum(invoice.id, f"X-{invoice.id}")
    assert sorted(got) == blank


def test_iter_unnumbered_costs_one_call_when_none_is_unnumbered(fake, server):
    fake.seed(500, unnumbered_paid_share=0.0)
    client = make_client(server)
    assert list(client.iter_unnumbered("Paid", 100)) == []
    assert client.calls == 1


def test_check_access_changes_nothing_and_names_what_is_refused(fake, server):
    fake.seed(20)
    before = fake.invoices_snapshot()
    client = make_client(server)
    client.check_access()
    assert fake.calls["GetInvoice"] == 1 and fake.calls["UpdateInvoice"] == 1
    fake.allowed_actions = {"getinvoices", "getinvoice"}
    with pytest.raises(WhmcsPermissionError, match="UpdateInvoice"):
        client.check_access()
    raw_answer(fake, {"result": "error", "message": "Command Not Found"})
    with pytest.raises(WhmcsApiError, match="Command Not Found"):
        client.check_access()
    assert fake.invoices_snapshot() == before


def test_only_the_exact_not_found_answer_is_not_found(fake, server):
    client = make_client(server)
    with pytest.raises(WhmcsInvoiceNotFoundError):
        client.get_invoice(99)
    for answer in ({"result": "error", "message": "Command Not Found"},
                   {"result": "error", "message": "Invoice ID Not Found"},
                   {"status": "error", "message": "Invoice not found"}):
        raw_answer(fake, answer)
        with pytest.raises(agent.WhmcsError) as info:
            client.get_invoice(99)
        assert not isinstance(info.value, WhmcsInvoiceNotFoundError), answer
