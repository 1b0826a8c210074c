"""WHMCS API secrets at rest: cryptography's MultiFernet over ``INVOICE_SYNC_SECRET_KEYS``.

The setting is a comma-separated list of Fernet keys. The first key encrypts; every key
decrypts, so a new key can be put in front while data written under the old one stays
readable, ``invoice-sync secrets rotate`` re-encrypts everything with the new key, and only
then the old key is removed (see README, "Rotating the secret keys").

Nothing here ever puts a key or a plaintext into a message, a log line or a repr.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from coordinator.exceptions import SecretsNotConfigured, SecretUnreadable

KEY_FILE_NAME = "secret-keys"
"""File under ``invoice-sync serve``'s data dir holding its keys, one per line (mode 0600)."""

_HOW_TO_FIX = (
    "set INVOICE_SYNC_SECRET_KEYS to one or more comma-separated Fernet keys "
    "(make one with `invoice-sync secrets generate-key`)"
)


def generate_key() -> str:
    """Return a new random Fernet key (url-safe base64 of 32 bytes)."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(value: str | Iterable[str] | None) -> list[str]:
    """Split the setting into keys: a comma-separated string, or a list (from JSON)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def fernet_from_keys(keys: Iterable[str]) -> MultiFernet:
    """Build a MultiFernet; the first key encrypts, all decrypt.

    Raises:
        SecretsNotConfigured: no keys, or one that is not a Fernet key (the message says which
            position, never the key itself).
    """
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            raise SecretsNotConfigured(
                f"INVOICE_SYNC_SECRET_KEYS: key #{position} is not a Fernet key "
                "(32 url-safe base64-encoded bytes); "
                "make one with `invoice-sync secrets generate-key`"
            ) from None
    if not fernets:
        raise SecretsNotConfigured(f"WHMCS API secrets cannot be stored: {_HOW_TO_FIX}")
    return MultiFernet(fernets)


def fernet_from_config(config: Mapping[str, Any]) -> MultiFernet:
    """Build the MultiFernet from the ``SECRET_KEYS`` setting (see ``fernet_from_keys``)."""
    return fernet_from_keys(parse_keys(config.get("SECRET_KEYS")))


def encrypt(fernet: MultiFernet, plaintext: str) -> str:
    """Encrypt ``plaintext`` with the first key; return the token as text."""
    return fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(fernet: MultiFernet, token: str) -> str:
    """Decrypt a stored token with whichever configured key made it.

    Raises:
        SecretUnreadable: no configured key decrypts it (or it was tampered with).
    """
    try:
        return fernet.decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        raise SecretUnreadable(
            "A stored WHMCS secret cannot be decrypted with the configured keys: was a key "
            "removed from INVOICE_SYNC_SECRET_KEYS before `invoice-sync secrets rotate` ran?"
        ) from None


def rotate(fernet: MultiFernet, token: str) -> str:
    """Re-encrypt a stored token under the first key (``MultiFernet.rotate``).

    Raises:
        SecretUnreadable: no configured key decrypts it.
    """
    try:
        return fernet.rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise SecretUnreadable(
            "A stored WHMCS secret cannot be decrypted with the configured keys, so it "
            "cannot be rotated: put the key that encrypted it back in INVOICE_SYNC_SECRET_KEYS"
        ) from None


def load_or_create_key_file(
    path: Path, generate: Callable[[], str] = generate_key,
    comment: str = "Fernet keys for WHMCS API secrets at rest; the first encrypts, all decrypt.",
) -> tuple[list[str], bool]:
    """Return the keys in ``path`` (one per line, ``#`` comments), creating it if missing.

    Used by ``invoice-sync serve`` on the embedded default, so a single-machine install
    encrypts secrets (and signs ledger checkpoints, with ``generate`` and ``comment`` of those
    keys) without any setup. The file is created 0600 with ``O_EXCL`` (two starts racing
    cannot both write a key).

    Returns:
        The keys, and whether the file was just created.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"# {comment}\n{generate()}\n")
            return read_key_file(path), True
    return read_key_file(path), False


def read_key_file(path: Path) -> list[str]:
    """Return the keys in a key file, skipping blank lines and ``#`` comments."""
    lines = path.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
