"""The ``invoice-sync`` command: serve, worker, doctor, tokens, syncs, reports, backup, demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from coordinator import auth
from coordinator.auth.cli import register as _register_tokens
from coordinator.backup.cli import register as _register_backup
from coordinator.demo import DEMO_DURATION
from coordinator.forecaster.cli import register as _register_forecaster
from coordinator.numbering.cli import register as _register_numbering
from coordinator.ops.datadir import (
    attach_to_serve,
    data_dir_option,
    embedded_socket,
    hold_data_dir,
    use_key_file,
    use_signing_key_file,
    uses_embedded,
)
from coordinator.ops.embedded import ValkeyServer
from coordinator.ops.multiproc import prepare_dir
from coordinator.systems.addon import register as _register_addon

ADMIN_FILE_LABEL = "admin-token file"
"""Label of the token ``serve`` keeps in ``<data-dir>/admin-token`` (see GET /v1/tokens)."""


def ensure_admin_token(client, data_dir: Path) -> str | None:
    """Make sure an admin token exists; return it when it was just created (to print once).

    The token lives in ``<data_dir>/admin-token`` (0600) and, as a hash, in Redis. When the file
    exists its token is (re-)registered, so wiping Redis does not lock the admin out; unless it
    was revoked (``DELETE /v1/tokens/{id}``): then the file gets a new token, never the old one.
    Tokens of the previous release are moved to this release's keys first.
    """
    from coordinator.auth import tokens

    tokens.migrate_legacy(client)
    path = data_dir / "admin-token"
    if path.exists():
        existing = path.read_text().strip()
        if not tokens.is_revoked(client, existing):
            auth.register_admin_token(client, existing, ADMIN_FILE_LABEL, created_by="serve")
            return None
        path.unlink()
    token = auth.new_token(auth.ADMIN)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    auth.register_admin_token(client, token, ADMIN_FILE_LABEL, created_by="serve")
    return token


class _Group(click.Group):
    """A command group whose list shows each command's first sentence whole, never cut.

    click shortens the list's descriptions to the terminal width with "...", mid-sentence;
    here the first sentence is wrapped onto more lines instead. Subgroups are of this class too.
    """

    group_class = type  # click: subgroups made with @group.group() use this same class

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        # Groups made elsewhere (coordinator/auth/cli.py) get the same whole-sentence listing.
        if type(cmd) is click.Group:
            cmd.__class__ = _Group
        super().add_command(cmd, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


ENVVAR_PREFIX = "INVOICE_SYNC"
"""Every option without an explicit ``envvar=`` reads ``INVOICE_SYNC_<COMMAND>_<OPTION>``
(click's ``auto_envvar_prefix``: e.g. ``INVOICE_SYNC_SYNC_FULL``, ``INVOICE_SYNC_REPORT_BY``)."""


@click.group(cls=_Group, context_settings={"auto_envvar_prefix": ENVVAR_PREFIX})
# Not from INVOICE_SYNC_VERSION: a deployment may well set that name for its own purposes.
@click.version_option(package_name="invoice-sync", allow_from_autoenv=False)
def main() -> None:
    """invoice-sync coordinator: one numbering and one revenue view for many WHMCS."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="INVOICE_SYNC_HOST")
@click.option("--port", default=8080, show_default=True, envvar="INVOICE_SYNC_PORT")
@data_dir_option
@click.option("--workers", default=2, show_default=True, envvar="INVOICE_SYNC_WORKERS",
              help="gunicorn worker processes.")
@click.option("--sync-worker/--no-sync-worker", default=True, show_default=True,
              envvar="INVOICE_SYNC_SYNC_WORKER",
              help="Also run an RQ sync worker with the daily scheduler as a child process.")
def serve(host: str, port: int, data_dir: Path, workers: int, sync_worker: bool) -> None:
    """Run the coordinator (gunicorn), on an embedded Valkey unless a Redis URL is set."""
    data_dir = data_dir.resolve()
    # First of all: a second serve on this data dir must exit before it touches anything.
    lock = hold_data_dir(data_dir)
    # Before anything imports prometheus_client (the app does): workers share this directory
    # for their metrics, and a previous run's files would otherwise be summed in.
    prepare_dir(data_dir / "metrics")

    from coordinator.app import create_app
    from coordinator.ops.redis_client import get_redis
    from coordinator.ops.server import run_gunicorn
    embedded = None
    child = None
    # A new data dir is a new installation: its numbering starts where the settings say. An
    # existing one whose store is empty lost its data: it must not start numbering again.
    new_store = uses_embedded() and not (data_dir / "valkey").exists()
    if uses_embedded():
        embedded = ValkeyServer(data_dir / "valkey", unixsocket=True, keep_fds=(lock,)).start()
        os.environ["INVOICE_SYNC_REDIS_URL"] = embedded.url
        click.echo(f"embedded Valkey: {embedded.url} (AOF, appendfsync always)", err=True)
    try:
        if embedded:
            _use_key_file(data_dir)
        app = create_app()
        token = None
        # API.md: INVOICE_SYNC_ADMIN_TOKEN sets the admin token instead of a generated one.
        with app.app_context():
            # Before any worker serves: numbering data of an older release moves first.
            from coordinator.numbering.migrate import migrate

            click.echo(f"numbering: {migrate(get_redis()).line()}", err=True)
            from coordinator.systems.migrate import migrate_legacy as migrate_registry

            if moved := migrate_registry(get_redis()):
                click.echo(f"systems registry: moved {moved} record(s) under {{auth}}", err=True)
            if not app.config["ADMIN_TOKEN"]:
                token = ensure_admin_token(get_redis(), data_dir)
        if token:
            click.echo(f"admin token (shown once, also in {data_dir / 'admin-token'}): {token}")
        with app.app_context():
            _check_numbering(get_redis(), new_store)
            _reconciliation_at_start(get_redis())
        click.echo(f"coordinator on http://{host}:{port} (dashboard: /ui/)", err=True)
        if sync_worker:
            from coordinator.forecaster.worker import spawn_worker_process

            # A child, not a thread: RQ forks a work horse per job and installs signal handlers.
            # It keeps its central polls' journals in this data dir.
            child = spawn_worker_process({"INVOICE_SYNC_DATA_DIR": str(data_dir)})
            click.echo(f"sync worker and daily scheduler: pid {child.pid}", err=True)
        run_gunicorn(bind=f"{host}:{port}", workers=workers, control_socket_disable=False,
                     control_socket=str(data_dir / "gunicorn.ctl"))
    finally:
        if child is not None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if embedded:
            embedded.stop()


def _check_numbering(client, new_store: bool) -> None:
    """Initialise the numbering of a new data dir; say so when a store must not number yet."""
    from coordinator.numbering import guard

    if new_store:
        guard.mark_initialised(client, "first serve on a new data dir")
        click.echo("numbering initialised: new data dir, sequences start at their settings "
                   "(GET /v1/sequences)", err=True)
        return
    # A data dir of the previous release (no guard yet) is adopted here, without renumbering;
    # one older than series is moved into the series layout first.
    from coordinator.numbering.migrate import ensure_layout

    ensure_layout(client)
    for series in guard.adopt_all(client):
        click.echo("allocations are refused (503): "
                   + guard.not_initialised_message(client, series), err=True)


def _reconciliation_at_start(client) -> None:
    """Bring the reconciliation's kept findings up to date before serving, so its GET never
    answers 503 behind serve (a previous release's store gets them built here, once)."""
    from coordinator.forecaster import reconcile_state

    outcome = reconcile_state.refresh(client, wait=0)
    if outcome == "built":
        click.echo("reconciliation: findings built from the stored numbers and the ledger",
                   err=True)


def _use_key_file(data_dir: Path) -> None:
    """On the embedded default, take WHMCS-secret keys from ``<data-dir>/secret-keys`` (and
    the ledger's signing keys from ``<data-dir>/ledger-signing-keys``).

    Created (0600) on first start, so one machine encrypts secrets without any setup; an
    explicit INVOICE_SYNC_SECRET_KEYS always wins. Workers inherit it through the environment.
    """
    used = use_key_file(data_dir, create=True)
    if used and used[1]:
        click.echo(f"secret key for WHMCS credentials created in {used[0]} (keep a backup)",
                   err=True)
    signing = use_signing_key_file(data_dir, create=True)
    if signing and signing[1]:
        click.echo(f"key signing ledger checkpoints created in {signing[0]} (keep a backup; "
                   "`invoice-sync ledger public-key` prints what auditors verify with)",
                   err=True)


@main.group("secrets")
def secrets_group() -> None:
    """Keys that encrypt WHMCS API secrets at rest (INVOICE_SYNC_SECRET_KEYS)."""


@secrets_group.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new Fernet key (put it first in INVOICE_SYNC_SECRET_KEYS to encrypt with it)."""
    from coordinator.systems import secrets

    click.echo(secrets.generate_key())


@secrets_group.command("rotate")
@data_dir_option
def secrets_rotate(data_dir: Path) -> None:
    """Re-encrypt every stored WHMCS secret with the first configured key.

    Without INVOICE_SYNC_REDIS_URL it talks to a running `invoice-sync serve` through its
    socket in the data dir, and without INVOICE_SYNC_SECRET_KEYS it reads its key file.
    """
    from coordinator.app import create_app
    from coordinator.exceptions import CoordinatorError
    from coordinator.ops.redis_client import get_redis
    from coordinator.systems import registry, secrets

    attach_to_serve(data_dir)
    app = create_app()
    try:
        with app.app_context():
            count = registry.rotate_secrets(get_redis(), secrets.fernet_from_config(app.config))
    except CoordinatorError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"re-encrypted {count} stored secret(s) with the first key")


@main.command()
@data_dir_option
def doctor(data_dir: Path) -> None:
    """Check the Redis and settings the coordinator would use; exit 1 if anything is wrong."""
    from flask import Flask

    from coordinator.config import load_config
    from coordinator.ops import doctor as checks
    from coordinator.ops.redis_client import make_redis

    # The keys `serve` uses: on the embedded default, its key file unless the variable is set.
    key_file = use_key_file(data_dir) if uses_embedded() else None
    app = Flask("coordinator")
    load_config(app)
    config = dict(app.config)
    # A doctor should answer quickly even when Redis hangs.
    config["REDIS_SOCKET_TIMEOUT"] = min(float(config["REDIS_SOCKET_TIMEOUT"]), 3.0)
    factory = make_redis
    if uses_embedded():
        socket_path = embedded_socket(data_dir)
        config["REDIS_URL"] = f"unix://{socket_path}"
        if not socket_path.exists():
            factory = None
    results = checks.run(config, factory, key_file[0] if key_file else None)
    for check in results:
        click.echo(check.line())
    failed = [check for check in results if not check.ok]
    if failed:
        click.echo(f"{len(failed)} problem(s) found")
        raise SystemExit(1)
    click.echo("all checks passed")


@main.command(help=f"""Show three WHMCS installations sharing one numbering ({DEMO_DURATION}).

    All local: starts `invoice-sync serve` on a free port in a temporary dir, three fake WHMCS
    installations (blue EUR, red USD, orange GBP), registers them, runs one agent poller per
    installation at once (or, with --central-poll, lets the coordinator poll them), prints the
    ledger and what each WHMCS holds, and cleans up.
    """)
@click.option("--keep", is_flag=True, envvar="INVOICE_SYNC_DEMO_KEEP",
              help="Keep the temporary data dir (logs, journals).")
@click.option("--central-poll", is_flag=True, envvar="INVOICE_SYNC_DEMO_CENTRAL_POLL",
              help="No agent processes: the coordinator's central polls number the invoices, "
                   "as for a WHMCS that runs only the addon module.")
def demo(keep: bool, central_poll: bool) -> None:
    from coordinator.demo.run import DemoError, run_demo

    try:
        code = run_demo(click.echo, keep=keep, central_poll=central_poll)
    except DemoError as error:
        raise click.ClickException(str(error)) from None
    raise SystemExit(code)


_register_forecaster(main)
_register_numbering(main)
_register_tokens(main)
_register_addon(main)
_register_backup(main)
