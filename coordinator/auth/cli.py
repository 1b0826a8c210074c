"""``invoice-sync token create|list|revoke`` (and ``create-admin``, kept from before).

These act on Redis directly, as an operator on the coordinator host: the configured Redis,
or a running ``serve`` found through its data dir. Records name the operator ``cli:<user>``.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from coordinator.auth.roles import ADMIN, MANAGED_ROLES
from coordinator.ops.datadir import attach_to_serve, data_dir_option


def _client(data_dir: Path):
    from coordinator.auth import tokens
    from coordinator.config import load_settings
    from coordinator.ops.redis_client import make_redis

    attach_to_serve(data_dir)
    settings = load_settings()
    client = make_redis(settings)
    tokens.migrate_legacy(client)
    return client, settings


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def _create(role: str, label: str, data_dir: Path) -> None:
    from coordinator.auth import tokens
    from coordinator.exceptions import CoordinatorError

    client, _ = _client(data_dir)
    try:
        record, token = tokens.create_token(client, role, label, _operator())
    except CoordinatorError as error:
        raise click.ClickException(_message(error)) from None
    click.echo(f"created {record['role']} token {record['id']} ({record['label']}); "
               "shown this once:", err=True)
    click.echo(token)


def _message(error) -> str:
    details = "; ".join(f"{field}: {' '.join(problems)}"
                        for where in (error.errors or {}).values()
                        for field, problems in where.items())
    return f"{error.message} ({details})" if details else error.message


@click.group("token")
def token_group() -> None:
    """Admin and auditor tokens: create, list, revoke (see docs/TOKENS.md)."""


@token_group.command("create")
@click.option("--role", type=click.Choice(MANAGED_ROLES), required=True,
              envvar="INVOICE_SYNC_TOKEN_ROLE", help="admin (full control) or auditor (reads).")
@click.option("--label", required=True, envvar="INVOICE_SYNC_TOKEN_LABEL",
              help="Who or what holds the token (shown in listings and audit records).")
@data_dir_option
def create(role: str, label: str, data_dir: Path) -> None:
    """Create a token; print it once.

    The token goes to stdout (for a pipe), its id and label to stderr.
    """
    _create(role, label, data_dir)


@token_group.command("create-admin")
@click.option("--label", default="admin", show_default=True, envvar="INVOICE_SYNC_TOKEN_LABEL",
              help="Who or what holds the token.")
@data_dir_option
def create_admin(label: str, data_dir: Path) -> None:
    """Create an admin token; print it once.

    The same as `create --role admin`; kept for scripts written for earlier releases.
    """
    _create(ADMIN, label, data_dir)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, envvar="INVOICE_SYNC_TOKEN_JSON",
              help="One JSON array, as GET /v1/tokens answers.")
@data_dir_option
def list_(as_json: bool, data_dir: Path) -> None:
    """List tokens: ids, roles, labels, no secrets.

    Every token the coordinator accepts, agent tokens included; never a token or its hash.
    """
    from coordinator.auth import tokens

    client, settings = _client(data_dir)
    found = tokens.list_tokens(client, settings.get("ADMIN_TOKEN"))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    columns = ("id", "role", "label", "system", "created_at", "created_by", "last_used")
    rows = [[str(t.get(c) or "-") for c in columns] for t in found]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@token_group.command("revoke")
@click.argument("token_id")
@data_dir_option
def revoke(token_id: str, data_dir: Path) -> None:
    """Revoke a token by id, at once, everywhere.

    Admin and auditor tokens only: agent tokens change with their system (rotate, delete).
    """
    from coordinator.auth import tokens
    from coordinator.exceptions import CoordinatorError

    client, settings = _client(data_dir)
    try:
        record = tokens.revoke_token(client, token_id, _operator(), settings.get("ADMIN_TOKEN"))
    except CoordinatorError as error:
        raise click.ClickException(_message(error)) from None
    click.echo(f"revoked {record['role']} token {record['id']} ({record['label']})")


def register(main: click.Group) -> None:
    """Add the ``token`` group to the ``invoice-sync`` command."""
    main.add_command(token_group)
