"""The backup file: versioned, checksummed JSON; the secret keys only passphrase-encrypted.

Layout (one JSON object)::

    {"format": "invoice-sync-backup", "version": 1, "sha256": "<hex of the body>",
     "body": {"created_at", "server": {"name", "version", "rdb_version"},
              "snapshot": {"started_at", "finished_at", "units": [...]},
              "secret_keys": null | {"kdf": "scrypt", "salt", "n", "r", "p", "token"}}}

The checksum covers the canonical JSON of ``body``: a truncated or edited file is refused before
anything is restored. The secret keys are encrypted with a Fernet key derived from a passphrase
by scrypt (cryptography); the passphrase itself is never stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from coordinator.exceptions import BackupRefused

FORMAT = "invoice-sync-backup"
"""The ``format`` field every backup file carries."""

VERSION = 1
"""The file-format version this release writes and reads."""

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
"""scrypt cost for the passphrase (32 MiB, about 0.1 s): slows guessing down, not the admin."""


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> Fernet:
    key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def seal_keys(secret_keys: list[str], passphrase: str) -> dict[str, Any]:
    """Encrypt the Fernet secret keys under ``passphrase`` (scrypt + Fernet)."""
    if not passphrase:
        raise BackupRefused("an empty passphrase cannot protect the secret keys")
    salt = os.urandom(16)
    token = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P).encrypt(
        json.dumps(secret_keys).encode("utf-8"))
    return {"kdf": "scrypt", "salt": base64.b64encode(salt).decode("ascii"), "n": SCRYPT_N,
            "r": SCRYPT_R, "p": SCRYPT_P, "token": token.decode("ascii")}


def open_keys(sealed: dict[str, Any], passphrase: str) -> list[str]:
    """Decrypt sealed secret keys.

    Raises:
        BackupRefused: wrong passphrase (or a changed file).
    """
    try:
        fernet = _derive(passphrase, base64.b64decode(sealed["salt"]), int(sealed["n"]),
                         int(sealed["r"]), int(sealed["p"]))
        return list(json.loads(fernet.decrypt(sealed["token"].encode("ascii"))))
    except (InvalidToken, KeyError, ValueError, TypeError):
        raise BackupRefused("the passphrase does not open the backup's secret keys") from None


def write(path: Path, body: dict[str, Any]) -> None:
    """Write the file atomically (temporary file, fsync, rename), readable by its owner only."""
    document = {"format": FORMAT, "version": VERSION,
                "sha256": hashlib.sha256(_canonical(body)).hexdigest(), "body": body}
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read(path: Path) -> dict[str, Any]:
    """Read and verify a backup file; return its body.

    Raises:
        BackupRefused: not a backup, a newer format, or a checksum that does not match.
    """
    try:
        document = json.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeError, ValueError) as error:
        raise BackupRefused(f"{path} is not a readable backup file ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BackupRefused(f"{path} is not an invoice-sync backup file")
    if document.get("version") != VERSION:
        raise BackupRefused(
            f"{path} is backup format version {document.get('version')!r}; this release reads "
            f"version {VERSION}: restore it with the release that wrote it or a newer one")
    body = document.get("body")
    if not isinstance(body, dict) or (
            hashlib.sha256(_canonical(body)).hexdigest() != document.get("sha256")):
        raise BackupRefused(f"{path}: checksum mismatch, the file is damaged or was changed")
    return body
