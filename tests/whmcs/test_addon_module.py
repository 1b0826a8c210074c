"""The WHMCS addon module (deploy/whmcs/modules/addons/invoice_sync/), run by php-cli.

The module's functions and hooks run against stubs of the WHMCS functions they use
(tests/whmcs/php/whmcs_stubs.php) and against the real coordinator over HTTP(S) on loopback,
on a real Valkey: every number asserted here was taken, confirmed or voided for real.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import missing_tool, require_tool

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "deploy" / "whmcs" / "modules" / "addons" / "invoice_sync"
RUNNER = Path(__file__).parent / "php" / "run.php"
FILES = f"{MODULE / 'invoice_sync.php'}:{MODULE / 'hooks.php'}"  # what WHMCS loads
PHP = shutil.which("php")
YEAR = "2026"


@pytest.fixture(scope="module", autouse=True)
def _php() -> None:
    require_tool("php", "php-cli")
    curl = subprocess.run([PHP, "-r", "echo function_exists('curl_init') ? 1 : 0;"],
                          capture_output=True, text=True)
    if curl.stdout.strip() != "1":
        missing_tool("php has no curl (apt-get install -y php-curl); the addon NOT tested")


def invoice(id: int, total: str = "15.95", invoicenum: str = "", date: str = f"{YEAR}-11-21"):
    return {"id": id, "invoicenum": invoicenum, "date": date, "total": total, "status": "Paid"}


class Whmcs:
    """One WHMCS installation's tables, carried between php-cli runs of the module."""

    def __init__(self, tmp_path: Path, settings: dict[str, str]) -> None:
        self.state = tmp_path / "whmcs-state.json"
        self.tables: dict[str, list[dict[str, Any]]] = {
            "tblinvoices": [],
            "tbladdonmodules": [
                {"module": "invoice_sync", "setting": k, "value": v} for k, v in settings.items()
            ],
        }
        self.race: dict[str, str] = {}

    def set(self, setting: str, value: str) -> None:
        rows = [r for r in self.tables["tbladdonmodules"] if r["setting"] != setting]
        self.tables["tbladdonmodules"] = rows + [
            {"module": "invoice_sync", "setting": setting, "value": value}]

    def run(self, action: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        self.state.write_text(json.dumps({"tables": self.tables, "race": self.race}))
        result = subprocess.run(
            [PHP, str(RUNNER), str(self.state), FILES, action, *args],
            capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = json.loads(result.stdout)
        self.tables = out["tables"]
        return out

    def activate(self) -> dict[str, Any]:
        return self.run("activate")

    def pay(self, *ids: int, event: str = "InvoicePaidPreEmail") -> dict[str, Any]:
        return self.run("hook", event, *map(str, ids))

    def invoicenum(self, id: int) -> str:
        return next(r["invoicenum"] for r in self.tables["tblinvoices"] if r["id"] == id)

    def log_rows(self) -> list[dict[str, Any]]:
        return self.tables["mod_invoice_sync"]


@pytest.fixture
def blue(live_coordinator):
    return live_coordinator.register("blue")


@pytest.fixture
def whmcs(tmp_path: Path, live_coordinator, blue) -> Whmcs:
    installation = Whmcs(tmp_path, {
        "coordinator_url": live_coordinator.url, "agent_token": blue.token, "attempts": "3",
        "timeout": "5",
    })
    assert installation.activate()["result"]["status"] == "success"
    return installation


def allocation(live_coordinator, allocation_id: str) -> dict[str, Any]:
    response = live_coordinator.request("GET", f"/v1/allocations/{allocation_id}")
    assert response.status_code == 200, response.text
    return response.json()


# -- the module's WHMCS functions ------------------------------------------------------------


def test_config_declares_the_settings_an_admin_fills_in(tmp_path: Path) -> None:
    out = Whmcs(tmp_path, {}).run("config")
    fields = out["result"]["fields"]
    assert out["result"]["name"] == "invoice-sync" and out["result"]["version"]
    assert fields["agent_token"]["Type"] == "password"
    assert fields["coordinator_url"]["Type"] == "text"
    assert set(fields["number_on"]["Options"]) == {"paid", "created"}
    assert fields["number_on"]["Default"] == "paid"
    assert {"timeout", "attempts", "ca_bundle", "transport", "sidecar"} <= set(fields)


def test_activate_creates_the_log_table_once_and_deactivate_keeps_it(tmp_path: Path) -> None:
    installation = Whmcs(tmp_path, {})
    out = installation.activate()
    assert out["result"]["status"] == "success"
    columns = {name for _, name in out["schemas"]["mod_invoice_sync"]}
    assert {"invoiceid", "allocation_id", "number", "formatted", "status"} <= columns
    installation.tables["mod_invoice_sync"].append({"id": 1, "invoiceid": 5})
    assert installation.activate()["result"]["status"] == "success"  # again: no error, no loss
    out = installation.run("deactivate")
    assert out["result"]["status"] == "success"
    assert installation.tables["mod_invoice_sync"] == [{"id": 1, "invoiceid": 5}]


# -- numbering through the real coordinator ---------------------------------------------------


def test_a_paid_invoice_gets_its_number_written_and_confirmed(whmcs: Whmcs, live_coordinator):
    whmcs.tables["tblinvoices"] = [invoice(10), invoice(11)]
    out = whmcs.pay(10, 11)
    assert out["log"] == []
    assert set(out["hooks"]) == {"InvoicePaidPreEmail", "InvoicePaid", "AfterCronJob"}
    assert [whmcs.invoicenum(10), whmcs.invoicenum(11)] == [
        f"INV-{YEAR}-000001", f"INV-{YEAR}-000002"]
    for row in whmcs.log_rows():
        assert row["status"] == "confirmed"
        assert allocation(live_coordinator, row["allocation_id"])["status"] == "confirmed"
    # The other hook of the event finds the number and takes none.
    whmcs.pay(10, event="InvoicePaid")
    assert len(live_coordinator.ledger("invoice", YEAR)) == 2


def test_an_invoice_that_has_a_number_is_left_alone(whmcs: Whmcs, live_coordinator) -> None:
    whmcs.tables["tblinvoices"] = [invoice(25, invoicenum="OLD-7")]
    out = whmcs.pay(25)
    assert out["log"] == [] and whmcs.invoicenum(25) == "OLD-7"
    assert live_coordinator.ledger("invoice", YEAR) == []  # not even asked


def test_an_answer_for_another_invoice_is_not_written(
    whmcs: Whmcs, live_coordinator, front
) -> None:
    proxy = front(rewrite=lambda allocation: {**allocation, "reference": "999"})
    whmcs.set("coordinator_url", proxy.url)
    whmcs.tables["tblinvoices"] = [invoice(26)]
    out = whmcs.pay(26)
    assert whmcs.invoicenum(26) == ""
    assert out["log"][0] == ("invoice-sync: invoice 26, taking a number failed: the answer is "
                             "for reference '999', not '26' (left as it is; the next attempt "
                             "gets the same number)")


def test_a_negative_total_is_numbered_as_a_credit_note(whmcs: Whmcs, live_coordinator) -> None:
    whmcs.tables["tblinvoices"] = [invoice(12, total="-20.00")]
    whmcs.pay(12)
    assert whmcs.invoicenum(12) == f"CN-{YEAR}-000001"
    assert whmcs.log_rows()[0]["sequence"] == "credit_note"


def test_number_on_created_hooks_creation_not_payment(whmcs: Whmcs) -> None:
    whmcs.set("number_on", "created")
    whmcs.tables["tblinvoices"] = [invoice(13)]
    out = whmcs.pay(13)
    assert set(out["hooks"]) == {"InvoiceCreationPreEmail", "InvoiceCreated", "AfterCronJob"}
    assert whmcs.invoicenum(13) == ""
    whmcs.pay(13, event="InvoiceCreated")
    assert whmcs.invoicenum(13) == f"INV-{YEAR}-000001"


def test_an_invoice_numbered_by_someone_else_meanwhile_keeps_that_number(
    whmcs: Whmcs, live_coordinator
) -> None:
    """An admin (or the poller) writes a number between our read and our write."""
    whmcs.tables["tblinvoices"] = [invoice(14)]
    whmcs.race = {"14": "MANUAL-7"}
    out = whmcs.pay(14)
    assert whmcs.invoicenum(14) == "MANUAL-7"
    row = whmcs.log_rows()[0]
    assert row["status"] == "void"
    voided = allocation(live_coordinator, row["allocation_id"])
    assert voided["status"] == "void" and "MANUAL-7" in voided["void_reason"]
    assert out["log"] == [f"invoice-sync: invoice 14 already had number 'MANUAL-7'; "
                          f"voided INV-{YEAR}-000001"]


def test_coordinator_down_leaves_the_invoice_unnumbered_with_the_reason(
    whmcs: Whmcs, live_coordinator
) -> None:
    whmcs.tables["tblinvoices"] = [invoice(15)]
    live_coordinator.stop()
    out = whmcs.pay(15, event="InvoicePaid")
    assert whmcs.invoicenum(15) == ""
    assert len(out["log"]) == 1
    assert out["log"][0].startswith("invoice-sync: invoice 15, taking a number failed: "
                                    "no answer after 3 attempt(s): unreachable")


class Front:
    """An HTTP front of the coordinator that answers 503 for the first ``fail`` requests to
    /v1/allocations — after forwarding them when ``swallow`` is set, so the coordinator took
    the number and only its answer was lost (what a proxy timing out looks like). While
    ``unconfirmable`` is set, every confirmation gets 503 and never reaches the coordinator."""

    def __init__(self, upstream: str, fail: int, swallow: bool,
                 rewrite: Any = None) -> None:
        self.upstream, self.fail, self.swallow, self.rewrite = upstream, fail, swallow, rewrite
        self.allocation_requests: list[bytes] = []
        self.unconfirmable = False
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                counted = method == "POST" and self.path == "/v1/allocations"
                if counted:
                    front.allocation_requests.append(body)
                failing = counted and len(front.allocation_requests) <= front.fail
                unconfirmed = front.unconfirmable and self.path.endswith("/confirm")
                if unconfirmed:
                    failing, swallowed = True, False
                else:
                    swallowed = front.swallow
                if not failing or swallowed:
                    answer = requests.request(method, front.upstream + self.path, data=body,
                                              headers=headers, timeout=30)
                if failing:
                    status, payload = 503, json.dumps({
                        "code": 503, "status": "Service Unavailable", "errors": {},
                        "message": "Durability could not be confirmed; retry"}).encode()
                else:
                    status, payload = answer.status_code, answer.content
                    if counted and front.rewrite is not None:  # a broken proxy or cache
                        payload = json.dumps(front.rewrite(answer.json())).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def front(live_coordinator) -> Iterator[Any]:
    fronts: list[Front] = []

    def make(fail: int = 0, swallow: bool = False, rewrite: Any = None) -> Front:
        fronts.append(Front(live_coordinator.url, fail, swallow, rewrite))
        return fronts[-1]

    yield make
    for made in fronts:
        made.close()


def test_a_503_is_retried_with_the_same_reference_and_burns_no_number(
    whmcs: Whmcs, live_coordinator, front
) -> None:
    # The coordinator gets the request three times and takes one number: only answers were lost.
    proxy = front(fail=2, swallow=True)
    whmcs.set("coordinator_url", proxy.url)
    whmcs.tables["tblinvoices"] = [invoice(16)]
    out = whmcs.pay(16)
    assert out["log"] == []
    assert whmcs.invoicenum(16) == f"INV-{YEAR}-000001"
    assert len(set(proxy.allocation_requests)) == 1 and len(proxy.allocation_requests) == 3
    assert [e["reference"] for e in live_coordinator.ledger("invoice", YEAR)] == ["16"]


def test_503_on_every_attempt_leaves_it_unnumbered_and_the_next_attempt_gets_the_same_number(
    whmcs: Whmcs, live_coordinator, front
) -> None:
    proxy = front(fail=3, swallow=True)
    whmcs.set("coordinator_url", proxy.url)
    whmcs.tables["tblinvoices"] = [invoice(17)]
    out = whmcs.pay(17)
    assert whmcs.invoicenum(17) == ""
    assert out["log"] == [
        "invoice-sync: invoice 17, taking a number failed: no answer after 3 attempt(s): "
        "HTTP 503: Durability could not be confirmed; retry "
        "(left as it is; the next attempt gets the same number)"]
    whmcs.pay(17, event="InvoicePaid")  # the front now lets requests through
    assert whmcs.invoicenum(17) == f"INV-{YEAR}-000001"
    assert [e["reference"] for e in live_coordinator.ledger("invoice", YEAR)] == ["17"]


def test_a_wrong_token_is_logged_as_such_and_takes_nothing(whmcs: Whmcs, live_coordinator):
    whmcs.set("agent_token", "isg_not-a-token-of-this-coordinator")
    whmcs.tables["tblinvoices"] = [invoice(18)]
    out = whmcs.pay(18)
    assert whmcs.invoicenum(18) == ""
    assert "HTTP 401: Invalid or revoked token — the agent token was refused" in out["log"][0]
    assert live_coordinator.ledger("invoice", YEAR) == []


def test_a_token_stored_encrypted_by_whmcs_is_decrypted(whmcs: Whmcs, blue) -> None:
    whmcs.set("agent_token", "enc:" + blue.token)  # as decrypt() of the stubs reverses it
    whmcs.tables["tblinvoices"] = [invoice(19)]
    assert whmcs.pay(19)["log"] == []
    assert whmcs.invoicenum(19) == f"INV-{YEAR}-000001"


def test_plain_http_to_another_host_is_refused_before_any_request(whmcs: Whmcs) -> None:
    whmcs.set("coordinator_url", "http://numbers.example.com")
    whmcs.tables["tblinvoices"] = [invoice(20)]
    out = whmcs.pay(20)
    assert whmcs.invoicenum(20) == ""
    assert "the coordinator URL must start with https:// (got http://)" in out["log"][0]


def test_a_number_that_went_backwards_is_not_written(whmcs: Whmcs, live_coordinator) -> None:
    """The coordinator answers number 1 while this WHMCS already received number 5 of the same
    sequence and period (its data was restored from an old backup): writing it would print a
    number twice."""
    whmcs.tables["mod_invoice_sync"].append({
        "id": 1, "invoiceid": 99, "allocation_id": f"invoice:{YEAR}:5", "sequence": "invoice",
        "period": YEAR, "number": 5, "formatted": f"INV-{YEAR}-000005", "status": "confirmed",
        "message": "", "created_at": "", "updated_at": ""})
    whmcs.tables["tblinvoices"] = [invoice(21)]
    out = whmcs.pay(21)
    assert whmcs.invoicenum(21) == ""
    assert (f"the coordinator answered INV-{YEAR}-000001 (number 1), but this installation "
            f"already received number 5 of invoice {YEAR} for another invoice") in out["log"][0]


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_coordinator(live_coordinator, tmp_path: Path):
    """The same coordinator app served over HTTPS with a self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from werkzeug.serving import make_server

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "invoice-sync test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = make_server("127.0.0.1", 0, live_coordinator.app, threaded=True,
                         ssl_context=(str(cert_file), str(key_file)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_port}", cert_file
    server.shutdown()
    server.server_close()


def test_tls_is_verified_and_a_ca_bundle_setting_makes_a_private_ca_trusted(
    whmcs: Whmcs, tls_coordinator, live_coordinator
) -> None:
    url, cert = tls_coordinator
    whmcs.set("coordinator_url", url)
    whmcs.tables["tblinvoices"] = [invoice(22)]
    out = whmcs.pay(22)
    assert whmcs.invoicenum(22) == ""
    assert "unreachable (SSL certificate problem: self-signed certificate" in out["log"][0]
    assert live_coordinator.ledger("invoice", YEAR) == []
    whmcs.set("ca_bundle", str(cert))
    assert whmcs.pay(22, event="InvoicePaid")["log"] == []
    assert whmcs.invoicenum(22) == f"INV-{YEAR}-000001"


# -- the admin page ----------------------------------------------------------------------------


def test_the_admin_page_shows_reachability_the_tokens_system_and_unconfirmed_numbers(
    whmcs: Whmcs, blue, live_coordinator, front
) -> None:
    whmcs.tables["tblinvoices"] = [invoice(23), invoice(24)]
    whmcs.pay(23)
    live_coordinator.stop()
    whmcs.tables["mod_invoice_sync"].append({
        "id": 9, "invoiceid": 24, "allocation_id": f"invoice:{YEAR}:2", "sequence": "invoice",
        "period": YEAR, "number": 2, "formatted": f"INV-{YEAR}-000002", "status": "failed",
        "message": "confirming failed", "created_at": "", "updated_at": ""})
    page = whmcs.run("output")["output"]
    assert "Problem" in page and "unreachable" in page
    assert "Not confirmed (1)" in page and f"INV-{YEAR}-000002" in page
    assert blue.token not in page

    live_coordinator.start()
    whmcs.set("coordinator_url", live_coordinator.url)
    page = whmcs.run("output")["output"]
    assert 'valid, for system &quot;blue&quot;' in page
    assert "/readyz answered HTTP 200" in page
    assert blue.token not in page


def test_the_admin_page_says_when_the_token_is_not_an_agent_token(
    whmcs: Whmcs, live_coordinator
) -> None:
    whmcs.set("agent_token", live_coordinator.admin_token)
    page = whmcs.run("output")["output"]
    assert "this is not an agent token" in page
    assert live_coordinator.admin_token not in page


# -- numbers left unconfirmed are finished, never numbered twice -------------------------------


@pytest.fixture
def no_confirm(whmcs: Whmcs, front) -> Front:
    """The module talks to a front of the coordinator that refuses every confirmation (503)
    until its ``unconfirmable`` is cleared."""
    proxy = front()
    proxy.unconfirmable = True
    whmcs.set("coordinator_url", proxy.url)
    return proxy


def test_a_confirmation_that_failed_is_finished_by_the_next_hook_run(
    whmcs: Whmcs, live_coordinator, no_confirm
) -> None:
    """Before, the next run found the invoice numbered and stopped: the coordinator listed the
    number as issued and unconfirmed for ever."""
    proxy = no_confirm
    whmcs.tables["tblinvoices"] = [invoice(40)]
    out = whmcs.pay(40)
    assert whmcs.invoicenum(40) == f"INV-{YEAR}-000001"  # written: on the PDF that goes out
    assert out["log"][0].startswith(f"invoice-sync: invoice 40, confirming INV-{YEAR}-000001 "
                                    "failed: no answer after 3 attempt(s): HTTP 503")
    (row,) = whmcs.log_rows()
    assert row["status"] == "failed"
    assert allocation(live_coordinator, row["allocation_id"])["status"] == "issued"

    proxy.unconfirmable = False
    assert whmcs.pay(40, event="InvoicePaid")["log"] == []
    assert allocation(live_coordinator, row["allocation_id"])["status"] == "confirmed"
    assert whmcs.log_rows()[0]["status"] == "confirmed"
    assert len(live_coordinator.ledger("invoice", YEAR)) == 1


def test_whmcs_cron_confirms_what_was_written_and_voids_what_was_replaced(
    whmcs: Whmcs, live_coordinator, no_confirm
) -> None:
    proxy = no_confirm
    whmcs.tables["tblinvoices"] = [invoice(41), invoice(42)]
    whmcs.pay(41, 42)
    assert [r["status"] for r in whmcs.log_rows()] == ["failed", "failed"]
    # An admin renumbers invoice 42 by hand before anything is confirmed.
    whmcs.tables["tblinvoices"][1]["invoicenum"] = "MANUAL-9"
    out = whmcs.run("hook", "AfterCronJob")  # the coordinator still refuses confirmations
    assert out["log"] == []  # the hook logged that very reason already: once per reason
    assert [r["status"] for r in whmcs.log_rows()] == ["failed", "void"]
    whmcs.set("coordinator_url", "http://127.0.0.1:9")  # a new reason: logged, once
    out = whmcs.run("hook", "AfterCronJob")
    (line,) = out["log"]
    assert line.startswith(f"invoice-sync: invoice 41, finishing INV-{YEAR}-000001 failed: "
                           "no answer after 3 attempt(s): unreachable")
    assert whmcs.run("hook", "AfterCronJob")["log"] == []

    whmcs.set("coordinator_url", proxy.url)
    proxy.unconfirmable = False
    out = whmcs.run("hook", "AfterCronJob")
    assert out["log"] == []
    first, second = whmcs.log_rows()
    assert (first["status"], second["status"]) == ("confirmed", "void")
    assert allocation(live_coordinator, first["allocation_id"])["status"] == "confirmed"
    voided = allocation(live_coordinator, second["allocation_id"])
    assert voided["status"] == "void" and "'MANUAL-9' by someone else" in voided["void_reason"]
    assert [whmcs.invoicenum(41), whmcs.invoicenum(42)] == [f"INV-{YEAR}-000001", "MANUAL-9"]


def test_the_admin_page_finishes_unconfirmed_numbers_on_request(
    whmcs: Whmcs, live_coordinator, no_confirm
) -> None:
    proxy = no_confirm
    whmcs.tables["tblinvoices"] = [invoice(43)]
    whmcs.pay(43)
    page = whmcs.run("output")["output"]
    assert "Not confirmed (1)" in page
    assert ('<form method="post" action="addonmodules.php?module=invoice_sync">'
            '<input type="hidden" name="token" value="stub-admin-session-token" />'
            '<input type="hidden" name="finish" value="1" />') in page
    proxy.unconfirmable = False
    # Forged from elsewhere (a link, an image, a form without the admin session's token):
    # WHMCS stops the request, nothing is finished.
    assert "Not confirmed (1)" in whmcs.run("output", "finish=1")["output"]
    for forged in ("finish=1", "finish=1&token=guessed"):
        assert whmcs.run("output", "", forged)["output"] == "Invalid CSRF Protection Token"
    row = whmcs.log_rows()[0]
    assert allocation(live_coordinator, row["allocation_id"])["status"] == "issued"
    page = whmcs.run("output", "", "finish=1&token=stub-admin-session-token")["output"]
    assert "Finished 1 number(s)" in page and "Not confirmed (0)" in page
    assert allocation(live_coordinator, row["allocation_id"])["status"] == "confirmed"


# -- settings are checked before anything is asked ---------------------------------------------


@pytest.mark.parametrize(("setting", "value", "problem"), [
    ("timeout", "ten", "timeout must be a whole number of seconds from 1 to 300 (is 'ten')"),
    ("attempts", "0", "attempts must be a whole number of attempts from 1 to 10 (is '0')"),
    ("number_on", "sometimes", "number_on must be paid or created (is 'sometimes')"),
    ("transport", "carrier-pigeon", "transport must be coordinator or sidecar"),
    ("ca_bundle", "/nonexistent/ca.pem", "the CA bundle /nonexistent/ca.pem cannot be read"),
    ("agent_token", "isa_an-admin-token", "the agent token must be the system's agent token, "
                                          "which starts with isg_"),
])
def test_invalid_settings_number_nothing_and_say_which(
    whmcs: Whmcs, live_coordinator, setting, value, problem
) -> None:
    whmcs.set(setting, value)
    whmcs.tables["tblinvoices"] = [invoice(44)]
    out = whmcs.run("hook", "InvoicePaid", "44")
    assert whmcs.invoicenum(44) == ""
    assert live_coordinator.ledger("invoice", YEAR) == []
    (line,) = out["log"]
    assert line.startswith("invoice-sync: invoice 44, checking the settings failed: ")
    assert problem in line
    page = whmcs.run("output")["output"]
    assert "no invoice is numbered until this is fixed" in page


def test_a_password_in_the_coordinator_url_is_refused_and_never_shown(
    whmcs: Whmcs, live_coordinator
) -> None:
    url = live_coordinator.url.replace("http://", "http://admin:hunter2-secret@")
    whmcs.set("coordinator_url", url)
    whmcs.tables["tblinvoices"] = [invoice(45)]
    out = whmcs.pay(45)
    assert whmcs.invoicenum(45) == ""
    assert "must not hold a user or password" in out["log"][0]
    assert "hunter2" not in json.dumps(out["log"])
    page = whmcs.run("output")["output"]
    assert "hunter2" not in page and "http://***@127.0.0.1" in page


def test_the_settings_page_says_complete_when_nothing_is_wrong(whmcs: Whmcs) -> None:
    page = whmcs.run("output")["output"]
    assert "<th>Settings</th><td><span class=\"label label-success\">OK</span> complete" in page


# -- upgrade -----------------------------------------------------------------------------------


def test_upgrade_keeps_every_recorded_number_and_restores_a_lost_table(tmp_path: Path) -> None:
    installation = Whmcs(tmp_path, {})
    installation.activate()
    installation.tables["mod_invoice_sync"].append({"id": 1, "invoiceid": 5, "number": 7})
    out = installation.run("upgrade", "1.0")
    assert installation.tables["mod_invoice_sync"] == [{"id": 1, "invoiceid": 5, "number": 7}]
    assert not out["schemas"]  # nothing created or changed
    del installation.tables["mod_invoice_sync"]
    out = installation.run("upgrade", "1.0")
    assert installation.tables["mod_invoice_sync"] == []
    assert "allocation_id" in {name for _, name in out["schemas"]["mod_invoice_sync"]}
