"""``invoice-sync demo``: three WHMCS installations, two legal entities, in about ten seconds.

Starts the real pieces, nothing mocked in between: ``invoice-sync serve`` (gunicorn on its
embedded Valkey, in a temporary data dir, on a free port), three fake WHMCS installations
(blue, red, orange) answering the real WHMCS API over HTTP, the three systems registered
through the admin API — blue and red in the ``default`` series, orange in a series of its
own (another legal entity) — and one ``invoice-sync-agent poll`` process per installation,
all started at once. Then it prints each series' ledger and what each WHMCS now holds, and
cleans up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from coordinator.demo.fake_whmcs import FakeWhmcs, FakeWhmcsServer, serve_fake_whmcs
from coordinator.ops.embedded import free_port

STARTUP_TIMEOUT = 60.0
"""Seconds to wait for ``invoice-sync serve`` to answer /readyz."""

AGENT_TIMEOUT = 120.0
"""Seconds the agents may take to number everything."""

_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Installation:
    """One demo WHMCS: its name, its clients' currency, the rate to the base currency."""

    name: str
    currency: str
    exchange_rate: str
    paid: tuple[str, ...]
    unpaid: tuple[str, ...] = ()
    credit_note: str | None = None
    series: str = "default"


INSTALLATIONS = (
    Installation("blue", "EUR", "1.0000", ("119.00", "59.50", "238.00", "35.70"), ("99.00",),
                 credit_note="-59.50"),
    Installation("red", "USD", "0.9200", ("49.99", "120.00", "15.00", "300.00"), ("75.00",)),
    Installation("orange", "GBP", "1.1700", ("24.00", "480.00", "60.00"), ("12.00", "36.00"),
                 series="orange-uk"),
)

OWN_SERIES = {"orange-uk": ("Orange Ltd (UK), another legal entity", "OUK-{YEAR}-{NUMBER}")}
"""Series the demo creates besides ``default``: description and invoice format."""

SERIES = ("default", *OWN_SERIES)


class DemoError(Exception):
    """A demo step failed; the message says which."""


def _seed(whmcs: FakeWhmcs, inst: Installation, today: dt.date) -> None:
    client = whmcs.add_client(inst.currency, firstname="Demo", lastname=inst.name.title())
    amounts = [(a, "Paid") for a in inst.paid] + [(a, "Unpaid") for a in inst.unpaid]
    if inst.credit_note:
        amounts.insert(2, (inst.credit_note, "Paid"))
    for i, (amount, status) in enumerate(amounts):
        whmcs.add_invoice(userid=client, status=status, subtotal=amount,
                          # This year's period even on 1 January.
                          date=max(today - dt.timedelta(days=len(amounts) - i),
                                   dt.date(today.year, 1, 1)),
                          datepaid=dt.datetime.now() if status == "Paid" else None)


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INVOICE_SYNC_", "INVOICE_SYNC_AGENT_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"invoice-sync serve exited with {proc.returncode}:\n"
                            + log.read_text()[-2000:])
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise DemoError(f"invoice-sync serve did not become ready:\n{log.read_text()[-2000:]}")


def run_demo(echo: Callable[[str], None], *, keep: bool = False) -> int:
    """Run the demo, printing through ``echo``; return 0 when every check held."""
    tmp = Path(tempfile.mkdtemp(prefix="invoice-sync-demo-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "serve.log"
    serve = None
    try:
        with open(log, "w") as log_file:
            serve = subprocess.Popen(
                [sys.executable, "-m", "coordinator", "serve", "--port", str(port),
                 "--data-dir", str(tmp / "data"), "--workers", "2"],
                env=_child_env({"INVOICE_SYNC_ALLOW_HTTP_SYSTEM_URLS": "true",
                                "INVOICE_SYNC_ALLOW_PRIVATE_SYSTEM_URLS": "true"}),
                stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp,
            )
        _wait_ready(url, serve, log)
        admin = {"Authorization": f"Bearer {(tmp / 'data' / 'admin-token').read_text().strip()}"}
        echo("invoice-sync demo: three WHMCS installations, two legal entities (series)\n")
        echo(f"coordinator  {url}  (invoice-sync serve: gunicorn + embedded Valkey, "
             f"data in {tmp / 'data'})")
        with contextlib.ExitStack() as stack:
            servers = {}
            today = dt.date.today()
            for inst in INSTALLATIONS:
                fake = FakeWhmcs(f"ident-{inst.name}", f"secret-{inst.name}-{port}")
                _seed(fake, inst, today)
                servers[inst.name] = stack.enter_context(serve_fake_whmcs(fake))
            tokens = _register(url, admin, servers, echo)
            ok = _run_agents(tmp, url, tokens, servers, echo)
            ok = _show(url, admin, servers, today, echo) and ok
            _maybe_report(url, admin, echo)
        echo("\nall checks held" if ok else "\nSOME CHECKS FAILED")
        return 0 if ok else 1
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
        if keep:
            echo(f"kept {tmp} (serve.log, data/, agent journals)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _register(
    url: str, admin: dict[str, str], servers: dict[str, FakeWhmcsServer],
    echo: Callable[[str], None],
) -> dict[str, str]:
    tokens = {}
    for name, (description, invoice_format) in OWN_SERIES.items():
        created = requests.post(f"{url}/v1/series", headers=admin, timeout=30,
                                json={"name": name, "description": description})
        patched = requests.patch(f"{url}/v1/series/{name}/sequences/invoice", headers=admin,
                                 timeout=30, json={"format": invoice_format})
        if created.status_code != 201 or patched.status_code != 200:
            raise DemoError(f"creating series {name}: HTTP {created.status_code} "
                            f"{created.text} / {patched.status_code} {patched.text}")
        echo(f"series {name}: {description}, invoices {invoice_format}")
    for inst in INSTALLATIONS:
        server = servers[inst.name]
        response = requests.post(f"{url}/v1/systems", headers=admin, timeout=30, json={
            "name": inst.name, "description": f"demo {inst.currency} brand", "url": server.url,
            "api_identifier": server.app.identifier, "api_secret": server.app.secret,
            "step": 100, "auto_sync": False, "exchange_rate": inst.exchange_rate,
            "series": inst.series,
        })
        if response.status_code != 201:
            raise DemoError(f"registering {inst.name}: HTTP {response.status_code} "
                            f"{response.text}")
        tokens[inst.name] = response.json()["agent_token"]
        waiting = sum(1 for r in server.app.invoices_snapshot() if r["status"] == "Paid")
        echo(f"WHMCS {inst.name:<6} {inst.currency}  rate {inst.exchange_rate}  "
             f"series {inst.series:<9}  {len(server.app)} invoices, {waiting} paid and "
             f"unnumbered  ({server.url})")
    return tokens


def _run_agents(
    tmp: Path, url: str, tokens: dict[str, str], servers: dict[str, FakeWhmcsServer],
    echo: Callable[[str], None],
) -> bool:
    echo("\nagents: `invoice-sync-agent poll` for blue, red and orange, all at once")
    started = time.monotonic()
    procs = {}
    for name, server in servers.items():
        procs[name] = subprocess.Popen(
            # --page-size 2: the three agents interleave their allocations page by page.
            [sys.executable, "-m", "agent", "poll", "--page-size", "2"],
            env=_child_env({
                "INVOICE_SYNC_AGENT_URL": url,
                "INVOICE_SYNC_AGENT_TOKEN": tokens[name],
                "INVOICE_SYNC_AGENT_WHMCS_URL": server.url,
                "INVOICE_SYNC_AGENT_WHMCS_IDENTIFIER": server.app.identifier,
                "INVOICE_SYNC_AGENT_WHMCS_SECRET": server.app.secret,
                "INVOICE_SYNC_AGENT_NUMBER_ON": "paid",
                "INVOICE_SYNC_AGENT_JOURNAL": str(tmp / f"agent-{name}.sqlite3"),
            }),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp,
        )
    ok = True
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=AGENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        summary = next((line for line in out.splitlines() if line.startswith("poll:")), "")
        echo(f"  {name:<6} exit {proc.returncode}  {summary}")
        if proc.returncode != 0:
            ok = False
            echo("    " + err.strip().replace("\n", "\n    "))
    echo(f"  done in {time.monotonic() - started:.1f}s")
    return ok


def _sequence_path(series: str, sequence: str) -> str:
    if series == "default":
        return f"/v1/sequences/{sequence}"
    return f"/v1/series/{series}/sequences/{sequence}"


def _ledger(url: str, admin: dict[str, str], sequence: str, period: str,
            series: str = "default") -> list[dict[str, Any]]:
    response = requests.get(f"{url}{_sequence_path(series, sequence)}/ledger", headers=admin,
                            timeout=30, params={"period": period, "limit": 1000})
    response.raise_for_status()
    return response.json()["entries"]


def _show(
    url: str, admin: dict[str, str], servers: dict[str, FakeWhmcsServer], today: dt.date,
    echo: Callable[[str], None],
) -> bool:
    period = str(today.year)
    ok = True
    for series, sequence in ((se, sq) for se in SERIES for sq in ("invoice", "credit_note")):
        entries = _ledger(url, admin, sequence, period, series)
        if not entries and series != "default":
            continue
        echo(f"\nseries {series}, {sequence} sequence, {period} "
             f"(GET {_sequence_path(series, sequence)}/ledger)")
        echo(f"  {'number':>6}  {'formatted':<16} {'system':<7} {'reference':<10} status")
        for e in entries:
            echo(f"  {e['number']:>6}  {e['formatted']:<16} {e['system']:<7} "
                 f"#{e['reference']:<9} {e['status']}")
        numbers = [e["number"] for e in entries]
        formatted = [e["formatted"] for e in entries]
        sound = (numbers == list(range(1, len(numbers) + 1))
                 and len(set(formatted)) == len(formatted)
                 and all(e["status"] == "confirmed" for e in entries))
        ok = ok and sound
        echo(f"  -> {len(entries)} number(s), 1..{len(entries)}, "
             + ("no gap, no duplicate, all confirmed" if sound else "NOT SOUND"))
    echo("\nwhat each WHMCS holds now (GetInvoices; invoicenum written by its agent)")
    ledger = {(e["system"], e["reference"]): e["formatted"]
              for series in SERIES for seq in ("invoice", "credit_note")
              for e in _ledger(url, admin, seq, period, series)}
    for name, server in servers.items():
        rows = server.app.invoices_snapshot()
        cells = []
        for r in rows:
            num = r["invoicenum"] or f"({r['status'].lower()}: no number until paid)"
            cells.append(f"#{r['id']:<3} {num:<32} {r['total']:>8} {r['currencycode']}")
            expected = ledger.get((name, str(r["id"])), "")
            ok = ok and r["invoicenum"] == expected
        echo(f"  {name:<6} " + "\n         ".join(cells))
    return ok


def _maybe_report(url: str, admin: dict[str, str], echo: Callable[[str], None]) -> None:
    """Sync each system and show revenue in the base currency, if the forecaster is there."""
    paths = requests.get(f"{url}/openapi.json", timeout=30).json().get("paths", {})
    if "/v1/reports/revenue" not in paths:
        echo("\n(revenue report: the forecaster is not part of this build)")
        return
    for inst in INSTALLATIONS:
        response = requests.post(f"{url}/v1/systems/{inst.name}/syncs", headers=admin,
                                 json={"mode": "full"}, timeout=30)
        if response.status_code != 202:
            echo(f"\n(sync of {inst.name} not started: HTTP {response.status_code})")
            return
        job = response.json()
        deadline = time.monotonic() + 60
        while job.get("state") not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.3)
            job = requests.get(f"{url}/v1/syncs/{job['id']}", headers=admin, timeout=30).json()
        echo(f"sync {inst.name}: {job.get('state')} ({job.get('invoices')} invoices)")
    year = dt.date.today().year
    for by in ("system", "series"):
        report = requests.get(f"{url}/v1/reports/revenue", headers=admin, timeout=30,
                              params={"from": f"{year}-01", "to": f"{year}-12", "by": by})
        if report.status_code != 200:
            echo(f"(revenue report: HTTP {report.status_code})")
            return
        data = report.json()
        echo(f"\nrevenue {year} by {by}, in {data['currency']} (paid invoices, credit notes "
             "negative)")
        for row in data["rows"]:
            echo(f"  {row['key']:<9} {row['invoices']:>3} invoices  gross {row['gross']:>10}")
        echo(f"  {'total':<9} {data['total']['invoices']:>3} invoices  gross "
             f"{data['total']['gross']:>10}")
