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


def _signing():
    """The signing keys of this process's settings (after ``_client`` found a serve's)."""
    from coordinator.config import load_settings
    from coordinator.exceptions import CoordinatorError
    from coordinator.numbering import checkpoints
    from coordinator.numbering.cli import _fail

    try:
        return checkpoints.SigningKeys.from_config(load_settings())
    except CoordinatorError as error:
        raise _fail(error) from None


@ledger_group.command("verify")
@_series
@_sequence
@_period
@data_dir_option
def ledger_verify(series: str, sequence: str, period: str | None, data_dir: Path) -> None:
    """Recompute the chain and check its signed checkpoints; exit 0 when all verify, 1 naming
    the first event or checkpoint that does not."""
    from coordinator.numbering import chain

    client = _client(data_dir, series)
    _report(chain.verify(client, sequence, period, series=series, signing=_signing()))


@ledger_group.command("checkpoint")
@_series
@_sequence
@data_dir_option
def ledger_checkpoint(series: str, sequence: str, data_dir: Path) -> None:
    """Sign the chain's head now with the first LEDGER_SIGNING_KEYS key; print the checkpoint."""
    from coordinator.exceptions import CoordinatorError
    from coordinator.numbering import checkpoints
    from coordinator.numbering.cli import _fail

    client = _client(data_dir, series)
    try:
        made = checkpoints.make(client, _signing(), sequence, series=series)
    except CoordinatorError as error:
        raise _fail(error) from None
    click.echo(json.dumps(made, indent=2))


@ledger_group.command("compact")
@_series
@_sequence
@click.option("--block", type=click.IntRange(min=1, max=5000), default=None,
              envvar="INVOICE_SYNC_LEDGER_ARCHIVE_BLOCK",
              help="Sealed events per archived block [default: LEDGER_ARCHIVE_BLOCK].")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              envvar="INVOICE_SYNC_LEDGER_ARCHIVE_KEEP",
              help="Newest sealed events left in the lists [default: LEDGER_ARCHIVE_KEEP].")
@data_dir_option
def ledger_compact(series: str, sequence: str, block: int | None, keep: int | None,
                   data_dir: Path) -> None:
    """Move old sealed events of the chain, and the entries of settled numbers, into
    compressed blocks (what the scheduler does on its tick); print how many moved. Safe to run
    at any time, and again."""
    from coordinator.config import load_settings
    from coordinator.numbering import compaction

    client = _client(data_dir, series)
    config = load_settings()
    config.update({name: value for name, value in (("LEDGER_ARCHIVE_BLOCK", block),
                                                   ("LEDGER_ARCHIVE_KEEP", keep)) if value})
    moved = compaction.run(client, sequence, config, series=series)
    click.echo(json.dumps({"series": series, "sequence": sequence, **moved}))


@ledger_group.command("public-key")
@data_dir_option
def ledger_public_key(data_dir: Path) -> None:
    """Print the public keys (PEM, with their key ids) that verify the signed checkpoints.

    Give them to auditors by a channel they trust (not in the export they check).
    """
    from coordinator.numbering import checkpoints
    from coordinator.ops.datadir import use_signing_key_file, uses_embedded

    if uses_embedded():
        use_signing_key_file(data_dir)
    public = _signing().public()
    if not public:
        raise click.ClickException("no signing key: set INVOICE_SYNC_LEDGER_SIGNING_KEYS (or "
                                   "run `invoice-sync serve`, which makes one in its data dir)")
    for kid, key in public.items():
        click.echo(f"# key_id {kid}")
        click.echo(checkpoints.public_pem(key), nl=False)


@ledger_group.command("generate-key")
def ledger_generate_key() -> None:
    """Print a new Ed25519 key for signing ledger checkpoints.

    Put it first in INVOICE_SYNC_LEDGER_SIGNING_KEYS; keep the old key listed after it.
    """
    from coordinator.numbering import checkpoints

    click.echo(checkpoints.generate_key())


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
    found = export.records(client, sequence, period, grace, series=series, signing=_signing())
    lines = export.csv_rows(found) if fmt == "csv" else export.jsonl(found)
    with output.open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(lines)
    click.echo(f"wrote {output}", err=True)


@ledger_group.command("verify-export")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", "public_keys", multiple=True, envvar="INVOICE_SYNC_LEDGER_PUBLIC_KEY",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM file of a public key the checkpoints must be signed with (as printed "
                   "by `invoice-sync ledger public-key`; repeat for several). Without it the "
                   "keys in the file's header are used, and the result says so.")
def ledger_verify_export(file: Path, public_keys: tuple[Path, ...]) -> None:
    """Check an export FILE offline (no Redis, no coordinator): chain and signed checkpoints;
    exit 0 ok, 1 broken."""
    from coordinator.numbering import checkpoints, export

    trusted = None
    if public_keys:
        trusted = {}
        for path in public_keys:
            try:
                key = checkpoints.load_public_pem(path.read_text(encoding="ascii"))
            except (ValueError, UnicodeError):
                raise click.BadParameter(f"{path} is not an Ed25519 public key (PEM)",
                                         param_hint="--public-key") from None
            trusted[checkpoints.key_id(key)] = key
    _report(export.verify_text(file.read_text(encoding="utf-8"), trusted))
