"""deploy/whmcs/invoice_sync.php, run by php-cli against WHMCS stubs and a real sidecar process.

The standalone hook numbers through the addon module's lib/numbering.php (one implementation,
sidecar transport); the stubs and the runner are the addon module's (tests/whmcs/php/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import missing_tool, require_tool

from .conftest import TOKEN, FakeCoordinator

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "deploy" / "whmcs" / "invoice_sync.php"
RUNNER = ROOT / "tests" / "whmcs" / "php" / "run.php"
PHP = shutil.which("php")


def php_has_curl() -> bool:
    out = subprocess.run(
        [PHP, "-r", "echo function_exists('curl_init') ? 1 : 0;"], capture_output=True, text=True
    )
    return out.stdout.strip() == "1"


@pytest.fixture(scope="module", autouse=True)
def _needs_php_with_curl() -> None:
    # Skips where php is missing, fails instead in CI (INVOICE_SYNC_REQUIRE_TOOLS, .ci/run).
    require_tool("php", "php-cli")
    if not php_has_curl():
        missing_tool("php has no curl extension (apt-get install -y php-curl); hook NOT tested")


class SidecarProcess:
    def __init__(self, coordinator: FakeCoordinator, tmp_path: Path, listen: str,
                 token: str = TOKEN) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_SYNC_AGENT_")}
        env.update(
            INVOICE_SYNC_AGENT_URL=coordinator.url,
            INVOICE_SYNC_AGENT_TOKEN=token,
            INVOICE_SYNC_AGENT_JOURNAL=str(tmp_path / "journal.sqlite3"),
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--listen", listen],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stderr.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.process.kill()
            raise AssertionError(f"sidecar did not start: {line}{self.process.stderr.read()}")
        where = match.group(1)
        self.address = where if where.startswith("unix:") else f"http://{where}"

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=30)
        self.process.stderr.close()
        return code


@pytest.fixture
def sidecar(coordinator: FakeCoordinator, tmp_path: Path) -> Iterator[SidecarProcess]:
    process = SidecarProcess(coordinator, tmp_path, "127.0.0.1:0")
    yield process
    assert process.stop() == 0  # SIGTERM is a clean shutdown


def invoice(id: int, total: str = "15.95", invoicenum: str = "", date: str = "2026-11-21"):
    return {"id": id, "invoicenum": invoicenum, "date": date, "total": total, "status": "Paid"}


def run_hook(
    tmp_path: Path,
    sidecar: str,
    event: str,
    invoices: list[dict[str, Any]],
    ids: list[int],
    hook: Path = HOOK,
    **settings: str,
) -> dict[str, Any]:
    state = tmp_path / "tblinvoices.json"  # the WHMCS database the hook reads and writes
    state.write_text(json.dumps({"tables": {"tblinvoices": invoices}}))
    env = {**os.environ, "INVOICE_SYNC_SIDECAR": sidecar, **settings}
    result = subprocess.run(
        [PHP, str(RUNNER), str(state), str(hook), "hook", event, *map(str, ids)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    out["invoices"] = out["tables"]["tblinvoices"]
    return out


def test_paid_invoice_gets_numbered_and_confirmed(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    out = run_hook(tmp_path, sidecar.address, "InvoicePaidPreEmail", [invoice(10)], [10])
    assert out["log"] == []
    assert out["invoices"][0]["invoicenum"] == "INV-2026-000001"
    assert set(out["hooks"]) == {"InvoicePaidPreEmail", "InvoicePaid"}
    assert coordinator.allocations["invoice:2026:1"]["status"] == "confirmed"
    assert coordinator.posts("/v1/allocations") == [
        {"document": "invoice", "reference": "10", "date": "2026-11-21"}
    ]


def test_negative_total_is_a_credit_note(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    out = run_hook(tmp_path, sidecar.address, "InvoicePaid", [invoice(11, "-20.00")], [11])
    assert out["invoices"][0]["invoicenum"] == "CN-2026-000001"
    assert coordinator.posts("/v1/allocations")[0]["document"] == "credit_note"


def test_numbered_invoices_are_left_alone(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    out = run_hook(
        tmp_path, sidecar.address, "InvoicePaidPreEmail", [invoice(12, invoicenum="OLD-7")], [12]
    )
    assert out["invoices"][0]["invoicenum"] == "OLD-7"
    assert coordinator.posts("/v1/allocations") == []


def test_sidecar_down_leaves_the_invoice_unnumbered_and_logs(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    out = run_hook(tmp_path, "http://127.0.0.1:9", "InvoicePaidPreEmail", [invoice(13)], [13])
    assert out["invoices"][0]["invoicenum"] == ""
    assert len(out["log"]) == 1 and "invoice 13, taking a number failed" in out["log"][0]
    assert "unreachable" in out["log"][0]


def test_a_refusal_is_logged_with_the_coordinator_message(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    run_hook(tmp_path, sidecar.address, "InvoicePaid", [invoice(14, date="2026-01-01")], [14])
    # the same invoice id, now dated in another year, with its number lost
    out = run_hook(tmp_path, sidecar.address, "InvoicePaid", [invoice(14, date="2027-01-01")], [14])
    assert out["invoices"][0]["invoicenum"] == ""
    assert "HTTP 409" in out["log"][0] and "another period" in out["log"][0]


def test_number_on_created_hooks_creation_not_payment(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    out = run_hook(
        tmp_path,
        sidecar.address,
        "InvoicePaidPreEmail",
        [invoice(15)],
        [15],
        INVOICE_SYNC_NUMBER_ON="created",
    )
    assert set(out["hooks"]) == {"InvoiceCreationPreEmail", "InvoiceCreated"}
    assert out["invoices"][0]["invoicenum"] == ""
    out = run_hook(
        tmp_path,
        sidecar.address,
        "InvoiceCreated",
        [invoice(15)],
        [15],
        INVOICE_SYNC_NUMBER_ON="created",
    )
    assert out["invoices"][0]["invoicenum"] == "INV-2026-000001"


def test_over_a_unix_socket(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    process = SidecarProcess(coordinator, tmp_path, f"unix:{tmp_path / 'agent.sock'}")
    try:
        out = run_hook(
            tmp_path, process.address, "InvoicePaid", [invoice(16), invoice(17)], [16, 17]
        )
    finally:
        assert process.stop() == 0
    assert [i["invoicenum"] for i in out["invoices"]] == ["INV-2026-000001", "INV-2026-000002"]
    assert out["log"] == []


def test_a_number_written_by_someone_else_while_the_hook_waits_is_kept(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    """The hook read the invoice unnumbered and asked for a number; while it waited, an admin
    (or WHMCS's own numbering) wrote one. The hook must not overwrite it, and must void the
    number it got, with the reason, so the ledger explains the gap."""
    state = tmp_path / "tblinvoices.json"

    def admin_numbers_invoice_20(allocation: dict[str, Any]) -> None:
        database = json.loads(state.read_text())
        database["tables"]["tblinvoices"][0]["invoicenum"] = "ADMIN-0007"
        state.write_text(json.dumps(database))

    coordinator.on_allocate = admin_numbers_invoice_20
    out = run_hook(tmp_path, sidecar.address, "InvoicePaid", [invoice(20)], [20])
    assert out["invoices"][0]["invoicenum"] == "ADMIN-0007"  # never overwritten
    ours = coordinator.allocations["invoice:2026:1"]
    assert ours["status"] == "void" and "ADMIN-0007" in ours["void_reason"]
    assert out["log"] == [
        "invoice-sync: invoice 20 already had number 'ADMIN-0007'; voided INV-2026-000001"
    ]


def test_a_number_that_went_backwards_is_refused_and_logged_with_both_numbers(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    out = run_hook(tmp_path, sidecar.address, "InvoicePaid",
                   [invoice(21), invoice(22), invoice(23)], [21, 22, 23])
    assert out["invoices"][2]["invoicenum"] == "INV-2026-000003"
    with coordinator.lock:  # an old backup of the coordinator restored: it forgot 2 and 3
        for number, reference in ((2, "22"), (3, "23")):
            del coordinator.allocations[f"invoice:2026:{number}"]
            del coordinator.by_reference[("invoice", reference)]
        coordinator.counters[("invoice", "2026")] = 1

    out = run_hook(tmp_path, sidecar.address, "InvoicePaid", [invoice(24)], [24])
    assert out["invoices"][0]["invoicenum"] == ""  # not written
    (line,) = out["log"]
    assert "invoice 24, taking a number failed" in line and "HTTP 409" in line
    assert "INV-2026-000002 (2)" in line and "already received INV-2026-000003 (3)" in line
    assert "for invoice 23" in line



# -- the hook numbers through the addon module's library (one implementation) -----------------


def test_in_the_whmcs_layout_it_finds_the_library_from_includes_hooks(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    """Installed as WHMCS has it: <root>/includes/hooks/invoice_sync.php and
    <root>/modules/addons/invoice_sync/ (not activated), with no ROOTDIR to go by."""
    root = tmp_path / "whmcs"
    shutil.copytree(ROOT / "deploy" / "whmcs" / "modules", root / "modules")
    (root / "includes" / "hooks").mkdir(parents=True)
    hook = shutil.copy(HOOK, root / "includes" / "hooks" / "invoice_sync.php")
    out = run_hook(tmp_path, sidecar.address, "InvoicePaid", [invoice(30)], [30],
                   hook=Path(hook), STUB_WHMCS_ROOT="")
    assert out["log"] == []
    assert out["invoices"][0]["invoicenum"] == "INV-2026-000001"
    assert coordinator.allocations["invoice:2026:1"]["status"] == "confirmed"
    assert "mod_invoice_sync" not in out["tables"]  # nothing of the module's table is needed


def test_without_the_library_it_numbers_nothing_and_says_what_to_copy(
    tmp_path: Path, coordinator: FakeCoordinator, sidecar: SidecarProcess
) -> None:
    empty_root = tmp_path / "whmcs"
    empty_root.mkdir()
    out = run_hook(tmp_path, sidecar.address, "InvoicePaidPreEmail", [invoice(31)], [31],
                   STUB_WHMCS_ROOT=str(empty_root))
    assert set(out["hooks"]) == {"InvoicePaidPreEmail", "InvoicePaid"}
    assert out["invoices"][0]["invoicenum"] == ""
    assert out["log"] == [
        f"invoice-sync: invoice 31 not numbered: {empty_root}/modules/addons/invoice_sync/lib/"
        "numbering.php is missing; copy the folder modules/addons/invoice_sync/ into WHMCS "
        "(the agent poller will finish it)"]
    assert coordinator.posts("/v1/allocations") == []


def test_a_refused_sidecar_token_is_logged_with_where_to_set_it(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    process = SidecarProcess(coordinator, tmp_path, "127.0.0.1:0", token="isg_not-this-one")
    try:
        out = run_hook(tmp_path, process.address, "InvoicePaid", [invoice(32)], [32])
    finally:
        assert process.stop() == 0
    assert out["invoices"][0]["invoicenum"] == ""
    (line,) = out["log"]
    assert line.startswith("invoice-sync: invoice 32, taking a number failed: HTTP 401: ")
    assert ("set this system's agent token in the sidecar's INVOICE_SYNC_AGENT_TOKEN "
            "(invoice-sync-agent serve)") in line
