"""``invoice-sync worker``, ``invoice-sync sync NAME`` and ``invoice-sync report …``."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import click

from coordinator.clock import utcnow
from coordinator.ops.datadir import attach_to_serve, data_dir_option


def _client(data_dir: Path):
    from coordinator.config import load_settings
    from coordinator.ops.redis_client import make_redis

    attach_to_serve(data_dir)
    settings = load_settings()
    return make_redis(settings), settings


@click.command()
@click.option("--with-scheduler/--without-scheduler", default=False, show_default=True,
              envvar="INVOICE_SYNC_WITH_SCHEDULER",
              help="Also run the daily automatic sync scheduler (safe on several workers).")
@click.option("--burst", is_flag=True, envvar="INVOICE_SYNC_WORKER_BURST",
              help="Exit when the queue is empty.")
@click.option("--name", default=None, envvar="INVOICE_SYNC_WORKER_NAME", help="RQ worker name.")
@data_dir_option
def worker(with_scheduler: bool, burst: bool, name: str | None, data_dir: Path) -> None:
    """Run an RQ worker for sync jobs (connection from INVOICE_SYNC_REDIS_URL / SENTINELS)."""
    from coordinator.forecaster.worker import run_worker

    client, settings = _client(data_dir)
    # Jobs read their settings afresh in the work horse: the central polls' journals go under
    # this --data-dir, not under a relative default that depends on the worker's cwd.
    os.environ["INVOICE_SYNC_DATA_DIR"] = str(data_dir.resolve())
    run_worker(client, settings, with_scheduler=with_scheduler, burst=burst, name=name)


@click.command("sync")
@click.argument("name")
@click.option("--full", is_flag=True, help="Every invoice (default: only new ones).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Show progress until the sync ends.")
@data_dir_option
def sync_command(name: str, full: bool, wait: bool, data_dir: Path) -> None:
    """Queue a sync of system NAME and follow it; exit 1 with WHMCS's reason if it fails."""
    from coordinator.exceptions import CoordinatorError
    from coordinator.forecaster import jobs, records

    client, _ = _client(data_dir)
    try:
        record = jobs.request_sync(client, name, "full" if full else "missing", trigger="cli")
    except CoordinatorError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"sync {record['id']} of {name} queued ({record['mode']})", err=True)
    if not wait:
        return
    with click.progressbar(length=1, label=f"syncing {name}", file=sys.stderr,
                           show_pos=True) as bar:
        done = 0
        while True:
            record = records.get(client, record["id"])
            if record["total_hint"]:
                bar.length = max(record["total_hint"], record["invoices"], 1)
            bar.update(record["invoices"] - done)
            done = record["invoices"]
            if record["state"] in (records.DONE, records.FAILED):
                break
            time.sleep(0.5)
    if record["state"] == records.FAILED:
        raise click.ClickException(f"sync failed ({record['error_code']}): {record['error']}")
    click.echo(f"done: {record['invoices']} invoices in {record['pages']} pages "
               f"({record['inserted']} new, {record['updated']} changed, "
               f"{record['deleted']} removed)")


def _rates(client):
    from coordinator.forecaster import reports
    from coordinator.systems import registry

    return reports.rates_of(registry.list_systems(client))


def _emit(report: dict, rows_key: str, as_csv: bool) -> None:
    if not as_csv:
        click.echo(json.dumps(report, indent=2))
        return
    rows = report.get(rows_key) or []
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=[k for k in rows[0] if k != "systems"],
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


@click.command()
@click.argument("kind", type=click.Choice(["revenue", "receivables", "forecast", "reconciliation"]))
@click.option("--from", "start", default=None, help="First month, YYYY-MM (revenue).")
@click.option("--to", "end", default=None, help="Last month, YYYY-MM (revenue).")
@click.option("--by", type=click.Choice(["month", "system", "series"]), default="month",
              show_default=True, help="Group revenue rows (series: per legal entity).")
@click.option("--months", default=6, show_default=True, type=int, help="Forecast horizon.")
@click.option("--csv", "as_csv", is_flag=True, help="Rows as CSV instead of the JSON report.")
@data_dir_option
def report(kind: str, start: str | None, end: str | None, by: str, months: int,
           as_csv: bool, data_dir: Path) -> None:
    """Print a report (the same JSON as GET /v1/reports/KIND)."""
    from coordinator.exceptions import CoordinatorError
    from coordinator.forecaster import reconcile_state, reports

    client, settings = _client(data_dir)
    base = settings["BASE_CURRENCY"]
    today = utcnow().date()
    try:
        if kind == "revenue":
            out = reports.revenue(client, _rates(client), base, start, end, by, today=today)
            _emit(out, "rows", as_csv)
        elif kind == "receivables":
            _emit(reports.receivables(client, _rates(client), base, today=today), "buckets",
                  as_csv)
        elif kind == "forecast":
            _emit(reports.forecast(client, _rates(client), base, months, today=today), "rows",
                  as_csv)
        else:
            out = reconcile_state.read(client)
            if out is None:
                raise click.ClickException("the reconciliation is not built yet: run "
                                           "`invoice-sync reconcile` (or the worker) first")
            _emit(out, "not_issued", as_csv)
    except CoordinatorError as error:
        raise click.ClickException(f"{error.message}: {error.errors or ''}") from None


@click.command("reconcile")
@click.option("--rebuild", is_flag=True, envvar="INVOICE_SYNC_RECONCILE_REBUILD",
              help="Build the kept findings again from every stored number and ledger entry "
                   "(default: apply what changed since the last update).")
@click.option("--verify", is_flag=True, envvar="INVOICE_SYNC_RECONCILE_VERIFY",
              help="Then compare them with a full computation; exit 1 if they differ.")
@data_dir_option
def reconcile_command(rebuild: bool, verify: bool, data_dir: Path) -> None:
    """Bring the reconciliation's kept findings up to date (what the worker does after a sync
    and the scheduler every tick); print their counts."""
    from coordinator.forecaster import reconcile, reconcile_state

    client, _ = _client(data_dir)
    if rebuild:
        done = reconcile_state.rebuild(client)
    else:
        done = reconcile_state.refresh(client) != "busy"
    if not done:
        raise click.ClickException("another process kept updating the reconciliation; "
                                   "try again")
    report = reconcile_state.read(client) or {}
    click.echo(json.dumps({"checked_at": report.get("checked_at"),
                           "counts": report.get("counts")}, indent=2))
    if verify:
        differences = reconcile_state.compare(report, reconcile.full_report(client))
        for line in differences:
            click.echo(f"differs: {line}", err=True)
        if differences:
            sys.exit(1)


@click.command("central-poll")
@click.argument("name")
@click.option("--full", is_flag=True, envvar="INVOICE_SYNC_CENTRAL_POLL_FULL",
              help="Read every invoice (default: only what may have changed since the last).")
@data_dir_option
def central_poll_command(name: str, full: bool, data_dir: Path) -> None:
    """Number what system NAME's hooks missed, now, from here; exit 1 if invoices are left."""
    from coordinator.exceptions import CoordinatorError
    from coordinator.forecaster import central_poll

    client, settings = _client(data_dir)
    settings["DATA_DIR"] = str(data_dir)
    try:
        outcome = central_poll.run(client, name, settings, full=full)
    except CoordinatorError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"central poll of {name}: {outcome['message']}")
    if outcome["state"] != "done":
        sys.exit(1)


def register(main: click.Group) -> None:
    """Add the forecaster's commands to the ``invoice-sync`` group."""
    main.add_command(worker)
    main.add_command(sync_command)
    main.add_command(report)
    main.add_command(central_poll_command)
    main.add_command(reconcile_command)
