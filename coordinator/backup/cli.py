"""``invoice-sync backup`` and ``invoice-sync restore`` (see docs/BACKUP.md)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import click

from coordinator.ops.datadir import data_dir_option, embedded_socket, uses_embedded

PASSPHRASE_ENV = "INVOICE_SYNC_BACKUP_PASSPHRASE"
"""Environment variable holding the passphrase of the secret keys (never a command argument:
arguments are visible to every user in ``ps``)."""


BACKUP_PREFIX = "invoice-sync-backup-"
"""Name prefix of the time-stamped files a directory ``--output`` gets (sorted = by age)."""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def server_identity(client) -> dict[str, str]:
    """Return the server's family and version (Valkey reports its own besides redis_version)."""
    info = client.info("server")
    name = str(info.get("server_name") or "redis")
    version = str(info.get(f"{name}_version") or info.get("redis_version"))
    return {"name": name, "version": version}


@contextlib.contextmanager
def _store(data_dir: Path, *, may_start: bool, decode: bool = False) -> Iterator[object]:
    """Yield a client (bytes unless ``decode``): the external Redis, a running serve's Valkey,
    or one started here.

    On the embedded default with no ``serve`` running, the data dir's Valkey is started for the
    command's duration (``may_start``: restore into a fresh data dir, backup of a stopped one).
    """
    from coordinator.config import load_settings
    from coordinator.ops.datadir import hold_data_dir
    from coordinator.ops.embedded import ValkeyServer
    from coordinator.ops.redis_client import make_redis

    settings = dict(load_settings())
    server = None
    if uses_embedded():
        socket_path = embedded_socket(data_dir)
        if not socket_path.exists():
            if not may_start:
                raise click.ClickException(f"no Valkey data in {data_dir.resolve() / 'valkey'}")
            # Hold the data dir as serve does: no serve starts on it while we use its Valkey.
            lock = hold_data_dir(data_dir.resolve())  # DataDirInUse: a serve holds it
            server = ValkeyServer(data_dir.resolve() / "valkey", unixsocket=True,
                                  keep_fds=(lock,)).start()
            click.echo(f"started the data dir's Valkey: {server.url}", err=True)
        settings["REDIS_URL"] = f"unix://{socket_path}"
    client = make_redis(settings, decode=decode)
    try:
        yield client
    finally:
        client.close()
        if server is not None:
            server.stop()


def _secret_keys(data_dir: Path) -> list[str]:
    from coordinator.systems import secrets

    keys = secrets.parse_keys(os.environ.get("INVOICE_SYNC_SECRET_KEYS"))
    key_file = data_dir.resolve() / secrets.KEY_FILE_NAME
    if not keys and key_file.exists():
        keys = secrets.read_key_file(key_file)
    if not keys:
        raise click.ClickException(
            f"--with-secret-keys: neither INVOICE_SYNC_SECRET_KEYS nor {key_file} holds keys")
    return keys


def _passphrase(confirm: bool) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    return click.prompt("passphrase for the secret keys", hide_input=True,
                        confirmation_prompt=confirm, err=True)


@click.command()
@data_dir_option
@click.option("--output", "-o", required=True, envvar="INVOICE_SYNC_BACKUP_OUTPUT",
              type=click.Path(path_type=Path),
              help="The backup file to write (0600, replaced atomically); an existing "
                   "directory gets a new time-stamped file in it.")
@click.option("--keep", type=click.IntRange(min=1), default=None, envvar="INVOICE_SYNC_BACKUP_KEEP",
              help="With a directory --output: then delete all but the newest N backups there.")
@click.option("--with-secret-keys", is_flag=True, envvar="INVOICE_SYNC_BACKUP_WITH_SECRET_KEYS",
              help=f"Also save the WHMCS-secret keys, encrypted with a passphrase "
                   f"(from {PASSPHRASE_ENV} or a prompt).")
def backup(data_dir: Path, output: Path, keep: int | None, with_secret_keys: bool) -> None:
    """Save a consistent snapshot of the whole store, without stopping the coordinator."""
    from coordinator.backup import archive, snapshot
    from coordinator.exceptions import CoordinatorError

    directory = output if output.is_dir() else None
    if directory is not None:
        output = directory / time.strftime(f"{BACKUP_PREFIX}%Y%m%dT%H%M%SZ.json", time.gmtime())
    elif keep is not None:
        raise click.UsageError("--keep needs a directory as --output")
    sealed = None
    if with_secret_keys:
        sealed = archive.seal_keys(_secret_keys(data_dir), _passphrase(confirm=True))
    try:
        if uses_embedded() and not (data_dir / "valkey").is_dir():
            raise click.ClickException(f"no Valkey data in {data_dir.resolve() / 'valkey'}")
        with _store(data_dir, may_start=True) as client:
            server = server_identity(client)
            taken = snapshot.take(client)
    except CoordinatorError as error:
        raise click.ClickException(error.message) from None
    first = next((unit["keys"][0] for unit in taken["units"] if unit["keys"]), None)
    if first is not None:
        import base64

        server["rdb_version"] = snapshot.rdb_version(base64.b64decode(first[2]))
    body = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "server": server, "snapshot": taken, "secret_keys": sealed}
    archive.write(output, body)
    count = sum(len(unit["keys"]) for unit in taken["units"])
    window = taken["finished_at"] - taken["started_at"]
    click.echo(f"backup written to {output}: {count} keys in {len(taken['units'])} units, "
               f"{server['name']} {server['version']}, window {window:.3f}s"
               + (", secret keys encrypted" if sealed else ""))
    if directory is not None and keep is not None:
        for old in sorted(directory.glob(f"{BACKUP_PREFIX}*.json"))[:-keep]:
            old.unlink()
            click.echo(f"deleted the older backup {old}")


@click.command()
@data_dir_option
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--with-secret-keys", is_flag=True, envvar="INVOICE_SYNC_RESTORE_WITH_SECRET_KEYS",
              help="Also write the backup's secret keys to <data-dir>/secret-keys (passphrase "
                   f"from {PASSPHRASE_ENV} or a prompt).")
def restore(data_dir: Path, backup_file: Path, with_secret_keys: bool) -> None:
    """Load a backup into an EMPTY store (refuses a store holding anything; changes nothing)."""
    from coordinator.backup import archive, snapshot
    from coordinator.exceptions import CoordinatorError
    from coordinator.numbering import guard
    from coordinator.systems import secrets

    try:
        body = archive.read(backup_file)
        keys = None
        if with_secret_keys:
            if not body.get("secret_keys"):
                raise click.ClickException(f"{backup_file} holds no secret keys")
            keys = archive.open_keys(body["secret_keys"], _passphrase(confirm=False))
            key_file = data_dir.resolve() / secrets.KEY_FILE_NAME
            if key_file.exists() and secrets.read_key_file(key_file) != keys:
                raise click.ClickException(
                    f"{key_file} exists with other keys; move it away first (nothing changed)")
        restored_series: list[str] = []

        def wait_for_recover(pipe, tag: bytes) -> list[str]:
            written = guard.queue_restored(
                pipe, tag, f"backup {backup_file.name} taken {body['created_at']}")
            if written:
                restored_series.append(tag.decode().removeprefix("ser:"))
            return written

        with _store(data_dir, may_start=True) as client:
            _refuse_older_server(client, body["server"])
            count = snapshot.restore(client, body["snapshot"]["units"], also=wait_for_recover)
    except CoordinatorError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"restored {count} keys from {backup_file} (taken {body['created_at']})")
    if restored_series:
        click.echo(f"numbering of series {', '.join(sorted(restored_series))} waits: numbers "
                   "issued after the backup was taken may be printed in WHMCS. Run "
                   "`invoice-sync recover` before numbering again (docs/RECOVERY.md)")
    if keys is not None:
        key_file = data_dir.resolve() / secrets.KEY_FILE_NAME
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write("# restored by invoice-sync restore\n" + "\n".join(keys) + "\n")
        click.echo(f"secret keys written to {key_file}"
                   + ("" if uses_embedded() else " (put them into INVOICE_SYNC_SECRET_KEYS)"))


def _refuse_older_server(client, source: dict) -> None:
    """Refuse before writing anything when the target is an older server of the same family."""
    from coordinator.exceptions import BackupRefused

    target = server_identity(client)
    if target["name"] == source.get("name") and (
            _version(target["version"]) < _version(str(source.get("version")))):
        raise BackupRefused(
            f"the backup was taken on {source['name']} {source['version']}, this server is "
            f"{target['name']} {target['version']}: DUMP payloads cannot be loaded into an "
            "older server; restore into the same or a newer version (nothing was changed)")


def register(main: click.Group) -> None:
    """Add ``backup``, ``restore`` and ``recover`` to the ``invoice-sync`` command."""
    from coordinator.backup.recover_cli import recover

    main.add_command(backup)
    main.add_command(restore)
    main.add_command(recover)
