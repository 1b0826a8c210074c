"""``invoice-sync series …`` and ``invoice-sync migrate``: series and the numbering layout."""

from __future__ import annotations

import json
from pathlib import Path

import click

from coordinator.ops.datadir import attach_to_serve, data_dir_option


def _client(data_dir: Path):
    from coordinator.config import load_settings
    from coordinator.ops.redis_client import make_redis

    attach_to_serve(data_dir)
    return make_redis(load_settings())


def _fail(error) -> click.ClickException:
    errors = f" {json.dumps(error.errors)}" if error.errors else ""
    return click.ClickException(f"{error.message}{errors}")


@click.group("series")
def series_group() -> None:
    """Series: one numbering (invoice and credit-note sequences, ledger) per legal entity."""


@series_group.command("create")
@click.argument("name")
@click.option("--description", default="", envvar="INVOICE_SYNC_SERIES_DESCRIPTION",
              help="Who issues the series' documents, e.g. \"ACME Inc. (US)\".")
@data_dir_option
def series_create(name: str, description: str, data_dir: Path) -> None:
    """Create series NAME (both sequences at their default settings)."""
    from coordinator import numbering
    from coordinator.exceptions import CoordinatorError

    try:
        record = numbering.create_series(_client(data_dir), name, description)
    except CoordinatorError as error:
        raise _fail(error) from None
    click.echo(json.dumps(record, indent=2))


@series_group.command("list")
@data_dir_option
def series_list(data_dir: Path) -> None:
    """List every series with the systems it numbers."""
    from coordinator import numbering
    from coordinator.systems import registry

    client = _client(data_dir)
    systems = registry.list_systems(client)
    for record in numbering.list_series(client):
        members = [s["name"] for s in systems if s["series"] == record["name"]]
        click.echo(f"{record['name']}\t{record['description']}\t{', '.join(members) or '-'}")


@series_group.command("show")
@click.argument("name")
@data_dir_option
def series_show(name: str, data_dir: Path) -> None:
    """Show series NAME: its systems and both sequences (settings, periods, next numbers)."""
    from coordinator import numbering
    from coordinator.exceptions import CoordinatorError
    from coordinator.systems import registry

    client = _client(data_dir)
    try:
        record = numbering.get_series(client, name)
        record["systems"] = [s["name"] for s in registry.list_systems(client)
                             if s["series"] == name]
        record["sequences"] = [numbering.describe(client, sequence, series=name)
                               for sequence in ("invoice", "credit_note")]
    except CoordinatorError as error:
        raise _fail(error) from None
    click.echo(json.dumps(record, indent=2))


@click.command("migrate")
@data_dir_option
def migrate_command(data_dir: Path) -> None:
    """Move numbering data of the release before series into the series 'default'.

    `invoice-sync serve` and every coordinator do it by themselves before their first number;
    this runs it on purpose and reports. Safe to run twice and while coordinators start.
    """
    from coordinator.numbering.migrate import migrate

    click.echo(migrate(_client(data_dir)).line())


def register(main: click.Group) -> None:
    """Add the numbering commands to the ``invoice-sync`` group."""
    main.add_command(series_group)
    main.add_command(migrate_command)
    from coordinator.numbering.chain_cli import ledger_group

    main.add_command(ledger_group)
