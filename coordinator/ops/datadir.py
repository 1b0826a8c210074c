"""What the ``invoice-sync`` commands share: the data dir, and finding a running ``serve``.

On the embedded default there is no Redis URL: ``serve`` keeps its Valkey behind a unix socket
in the data dir. The other commands (sync, report, worker, secrets, token) reach it there, so
`invoice-sync serve` in one terminal and `invoice-sync sync blue` in another just work.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

DEFAULT_DATA_DIR = "./invoice-sync-data"
"""Where ``serve`` keeps its embedded Valkey, the admin token and the secret-keys file."""

data_dir_option = click.option(
    "--data-dir", default=DEFAULT_DATA_DIR, show_default=True, envvar="INVOICE_SYNC_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Embedded default: its Valkey, admin token and secret keys (when no Redis URL is set).",
)


def uses_embedded() -> bool:
    """Whether no external Redis is configured (no URL, Sentinels or Cluster)."""
    return not (
        os.environ.get("INVOICE_SYNC_REDIS_URL") or os.environ.get("INVOICE_SYNC_SENTINELS")
        or os.environ.get("INVOICE_SYNC_REDIS_CLUSTER")
    )


def embedded_socket(data_dir: Path) -> Path:
    """The unix socket of the Valkey that ``serve`` runs in ``data_dir``."""
    return data_dir.resolve() / "valkey" / "valkey.sock"


def attach_to_serve(data_dir: Path) -> None:
    """Point this process at the Redis (and key file) of a running ``serve``, if none is set.

    Raises:
        click.ClickException: no Redis configured and no running ``serve`` in ``data_dir``.
    """
    if not uses_embedded():
        return
    from coordinator.systems import secrets

    socket_path = embedded_socket(data_dir)
    if not socket_path.exists():
        raise click.ClickException(
            f"no Redis configured and no running `invoice-sync serve` at {socket_path}: "
            "start it (or pass its --data-dir), or set INVOICE_SYNC_REDIS_URL"
        )
    os.environ["INVOICE_SYNC_REDIS_URL"] = f"unix://{socket_path}"
    key_file = data_dir.resolve() / secrets.KEY_FILE_NAME
    if not os.environ.get("INVOICE_SYNC_SECRET_KEYS") and key_file.exists():
        os.environ["INVOICE_SYNC_SECRET_KEYS"] = ",".join(secrets.read_key_file(key_file))
