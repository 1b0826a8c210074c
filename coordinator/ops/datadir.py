"""What the ``invoice-sync`` commands share: the data dir, and finding a running ``serve``.

On the embedded default there is no Redis URL: ``serve`` keeps its Valkey behind a unix socket
in the data dir. The other commands (sync, report, worker, secrets, token) reach it there, so
`invoice-sync serve` in one terminal and `invoice-sync sync blue` in another just work.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import click

DEFAULT_DATA_DIR = "./invoice-sync-data"
"""Where ``serve`` keeps its embedded Valkey, the admin token and the secret-keys file."""

data_dir_option = click.option(
    "--data-dir", default=DEFAULT_DATA_DIR, show_default=True, envvar="INVOICE_SYNC_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Embedded default: its Valkey, admin token and secret keys (when no Redis URL is set).",
)


LOCK_FILE_NAME = "serve.lock"
"""File in the data dir that a running ``serve`` holds an exclusive ``flock`` on (with its pid)."""

EXIT_DATA_DIR_IN_USE = 75
"""Exit code of a ``serve`` refused because another one holds the data dir (EX_TEMPFAIL)."""

_held_lock: int | None = None
"""The descriptor of the held lock file: open for the whole life of the process, never closed."""


class DataDirInUse(click.ClickException):
    """Another ``invoice-sync serve`` holds the data dir."""

    exit_code = EXIT_DATA_DIR_IN_USE


def hold_data_dir(data_dir: Path) -> int:
    """Take the data dir for this process, for its whole life, or fail without touching it.

    One ``serve`` per data dir: a second one would start its own Valkey on the same socket and
    AOF and, on its way out, remove the socket the first one serves on. The lock is an exclusive
    ``flock`` on ``<data_dir>/serve.lock``; the kernel drops it when the last process holding the
    descriptor ends, however it ends, so a crash leaves no stale lock. ``serve`` passes the
    descriptor to its Valkey too: a Valkey left running by a killed ``serve`` still holds the
    data dir, and no second Valkey is started on its AOF.

    Returns:
        The lock's descriptor (to pass to children that must hold the data dir as well).

    Raises:
        DataDirInUse: another process holds the lock (the message names it).
    """
    global _held_lock
    if _held_lock is not None:
        return _held_lock
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        raise DataDirInUse(_in_use_message(data_dir, holder)) from None
    # Only the holder writes: a refused process leaves the file as it found it.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    _held_lock = fd
    return fd


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _in_use_message(data_dir: Path, holder: str) -> str:
    message = f"{data_dir} is in use by another `invoice-sync serve` (pid {holder or 'unknown'})"
    if holder and not _alive(holder):
        # That serve was killed, but the Valkey it started (which holds the lock too) was not.
        pid_file = data_dir / "valkey" / "valkey.pid"
        valkey = pid_file.read_text().strip() if pid_file.exists() else "unknown"
        return (f"{message}, which is gone, but its embedded Valkey (pid {valkey}) still runs: "
                "stop that Valkey (it flushes its AOF on SIGTERM), then start serve again")
    return f"{message}; stop that one first, or give this one another --data-dir"


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
    socket_path = embedded_socket(data_dir)
    if not socket_path.exists():
        raise click.ClickException(
            f"no Redis configured and no running `invoice-sync serve` at {socket_path}: "
            "start it (or pass its --data-dir), or set INVOICE_SYNC_REDIS_URL"
        )
    os.environ["INVOICE_SYNC_REDIS_URL"] = f"unix://{socket_path}"
    use_key_file(data_dir)
    use_signing_key_file(data_dir)


def use_key_file(data_dir: Path, *, create: bool = False) -> tuple[Path, bool] | None:
    """Without INVOICE_SYNC_SECRET_KEYS, take the WHMCS-secret keys from the data dir's key file.

    The one resolution every command shares, so ``serve`` and the commands that reach it (and
    ``doctor``, which checks what they would use) see the same keys: an explicit
    INVOICE_SYNC_SECRET_KEYS always wins; otherwise ``<data_dir>/secret-keys``, which ``serve``
    creates (0600) on first start (``create=True``) and the others only read. The keys go into
    this process's environment, so gunicorn and RQ workers inherit them.

    Returns:
        The key file and whether it was just created, or None when it is not used.
    """
    from coordinator.systems import secrets

    return _use_keys(data_dir / secrets.KEY_FILE_NAME, "INVOICE_SYNC_SECRET_KEYS", create)


def use_signing_key_file(data_dir: Path, *, create: bool = False) -> tuple[Path, bool] | None:
    """Without INVOICE_SYNC_LEDGER_SIGNING_KEYS, take the ledger's checkpoint signing keys
    from ``<data_dir>/ledger-signing-keys``: resolved exactly like :func:`use_key_file`."""
    from coordinator.numbering import checkpoints

    return _use_keys(data_dir / checkpoints.KEY_FILE_NAME, "INVOICE_SYNC_LEDGER_SIGNING_KEYS",
                     create, checkpoints.generate_key,
                     "Ed25519 keys signing ledger checkpoints; the first signs, all verify.")


def _use_keys(path: Path, variable: str, create: bool, *generator: Any) -> tuple[Path, bool] | None:
    from coordinator.systems import secrets

    if os.environ.get(variable):
        return None
    path = path.resolve()
    if create:
        found, created = secrets.load_or_create_key_file(path, *generator)
    elif path.exists():
        found, created = secrets.read_key_file(path), False
    else:
        return None
    os.environ[variable] = ",".join(found)
    return path, created
