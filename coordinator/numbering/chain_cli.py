"""``invoice-sync ledger …``: verify the hash chain, export it, verify an export offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from coordinator.ops.datadir import data_dir_option

_series = click.option("--series", default="default", show_default=True,
                       envvar="INVOICE_SYNC_LEDGER_SERIES", help="The series (legal entity).")
_sequence = click.option("--sequence", default="invoice", show_default=True,
                         type=click.Choice(["invoice", "credit_note"]),
                         envvar="INVOICE_SYNC_LEDGER_SEQUENCE", help="The sequence.")
_period = click.option("--period", default=None, envvar="INVOICE_SYNC_LEDGER_PERIOD",
                       help="all, YYYY or YYYY-MM: the period whose entries are counted "
                            "(verify) or exported (export). The whole chain is always checked.")


def _report(result: dict) -> None:
    """Print ``result`` as JSON and exit 0 when it verified, 1 when not."""
    click.echo(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


def _client(data_dir: Path, series: str):
    from coordinator.exceptions import CoordinatorError
    from coordinator.numbering import series as series_mod
    from coordinator.numbering.cli import _client as numbering_client
    from coordinator.numbering.cli import _fail

    client = numbering_client(data_dir)
    try:
        series_mod.require(client, series)
    except CoordinatorError as error:
        raise _fail(error) from None
    return client


@click.group("ledger")
def ledger_group() -> None:
    """The audit ledger: verify its SHA-256 chain, export it, check an export offline."""


@ledger_group.command("verify")
@_series
@_sequence
@_period
@data_dir_option
def ledger_verify(series: str, sequence: str, period: str | None, data_dir: Path) -> None:
    """Recompute the chain; exit 0 when every event verifies, 1 naming the first that does not."""
    from coordinator.numbering import chain

    _report(chain.verify(_client(data_dir, series), sequence, period, series=series))


@ledger_group.command("export")
@_series
@_sequence
@_period
@click.option("--format", "fmt", default="jsonl", show_default=True,
              type=click.Choice(["jsonl", "csv"]), envvar="INVOICE_SYNC_LEDGER_FORMAT",
              help="JSON lines or CSV (kind,seq,prev,hash,data).")
@click.option("--output", required=True, envvar="INVOICE_SYNC_LEDGER_OUTPUT",
              type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@data_dir_option
def ledger_export(series: str, sequence: str, period: str | None, fmt: str, output: Path,
                  data_dir: Path) -> None:
    """Write the chained events with the period's entries, gaps and settings audit."""
    from coordinator.config import load_settings
    from coordinator.numbering import export

    client = _client(data_dir, series)
    grace = int(load_settings()["UNCONFIRMED_GRACE_SECONDS"])
    found = export.records(client, sequence, period, grace, series=series)
    lines = export.csv_rows(found) if fmt == "csv" else export.jsonl(found)
    with output.open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(lines)
    click.echo(f"wrote {output}", err=True)


@ledger_group.command("verify-export")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ledger_verify_export(file: Path) -> None:
    """Check an export FILE offline (no Redis, no coordinator); exit 0 ok, 1 broken."""
    from coordinator.numbering import export

    _report(export.verify_text(file.read_text(encoding="utf-8")))
