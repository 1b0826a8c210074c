"""Signed checkpoints: the head of a ledger chain, signed with an Ed25519 key kept off Redis.

The chain alone cannot stop someone with write access to Redis from rewriting an event *and*
every hash after it. A checkpoint can: it is the statement "chain ``series``/``sequence`` had
``events`` events, the last with hash ``head``", signed with a key Redis never sees. A rewrite
changes the head at that position, and the signature no longer matches what ``verify``
recomputes.

What is signed (the checkpoint without its ``signature``, canonical as in ``chain.canonical``)::

    {"format": "invoice-sync-checkpoint/1", "series": "default", "sequence": "invoice",
     "events": 1234, "head": "<sha256 hex of event 1233>", "at": "2026-11-21T10:00:00Z",
     "key_id": "<first 16 hex of sha256(raw public key)>"}

``signature`` is the url-safe base64 of the 64-byte Ed25519 signature over those bytes.

Keys (``LEDGER_SIGNING_KEYS``) are kept like the Fernet keys of WHMCS secrets: a
comma-separated list of private keys (url-safe base64 of the 32 raw bytes); the first signs,
every one verifies, so a new key goes first and the old stays listed for its checkpoints.
``invoice-sync ledger public-key`` prints the public keys (PEM) an auditor verifies with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.exceptions import Conflict, SecretsNotConfigured
from coordinator.numbering import chain
from coordinator.numbering.sequences import DEFAULT_SERIES, check_name

FORMAT = "invoice-sync-checkpoint/1"
"""The ``format`` every checkpoint carries (and signs)."""

KEY_FILE_NAME = "ledger-signing-keys"
"""File under ``invoice-sync serve``'s data dir holding its signing keys (mode 0600)."""

_HOW_TO_FIX = ("set INVOICE_SYNC_LEDGER_SIGNING_KEYS to one or more comma-separated keys "
               "(make one with `invoice-sync ledger generate-key`)")


def generate_key() -> str:
    """Return a new Ed25519 private key as url-safe base64 of its 32 raw bytes."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())
    return base64.urlsafe_b64encode(raw).decode("ascii")


def key_id(public: Ed25519PublicKey) -> str:
    """Name a public key: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), what auditors are given."""
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_pem(text: str) -> Ed25519PublicKey:
    """Read a PEM public key (as :func:`public_pem` writes it).

    Raises:
        ValueError: not an Ed25519 public key.
    """
    public = serialization.load_pem_public_key(text.encode("ascii"))
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return public


@dataclass(frozen=True)
class SigningKeys:
    """The configured signing keys: the first signs, every one verifies."""

    private: tuple[Ed25519PrivateKey, ...] = field(repr=False, default=())

    @classmethod
    def from_setting(cls, value: str | Iterable[str] | None) -> SigningKeys:
        """Parse ``LEDGER_SIGNING_KEYS`` (empty when unset).

        Raises:
            SecretsNotConfigured: a key that is not 32 url-safe base64 bytes (the message
                names its position, never the key).
        """
        from coordinator.systems.secrets import parse_keys

        found = []
        for position, text in enumerate(parse_keys(value), start=1):
            try:
                raw = base64.urlsafe_b64decode(text.encode("ascii"))
                found.append(Ed25519PrivateKey.from_private_bytes(raw))
            except (ValueError, binascii.Error, UnicodeError):
                raise SecretsNotConfigured(
                    f"INVOICE_SYNC_LEDGER_SIGNING_KEYS: key #{position} is not an Ed25519 "
                    "private key (32 url-safe base64-encoded bytes); make one with "
                    "`invoice-sync ledger generate-key`") from None
        return cls(tuple(found))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SigningKeys:
        """The keys of a coordinator's settings."""
        return cls.from_setting(config.get("LEDGER_SIGNING_KEYS"))

    def public(self) -> dict[str, Ed25519PublicKey]:
        """Every key's public half, by key id (the signing key first)."""
        return {key_id(k.public_key()): k.public_key() for k in self.private}

    def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Return ``payload`` with ``key_id`` and ``signature`` (by the first key) added.

        Raises:
            SecretsNotConfigured: no key configured.
        """
        if not self.private:
            raise SecretsNotConfigured(f"Ledger checkpoints cannot be signed: {_HOW_TO_FIX}")
        signer = self.private[0]
        signed = {**payload, "key_id": key_id(signer.public_key())}
        signature = signer.sign(chain.canonical(signed))
        return {**signed, "signature": base64.urlsafe_b64encode(signature).decode("ascii")}


def check_signature(checkpoint: Mapping[str, Any],
                    public: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Return why ``checkpoint``'s signature does not hold under ``public``, or None if it does."""
    if checkpoint.get("format") != FORMAT:
        return f"not a {FORMAT} checkpoint"
    verifier = public.get(str(checkpoint.get("key_id")))
    if verifier is None:
        return (f"signed by key {checkpoint.get('key_id')!r}, which is not among the "
                "public keys verified against")
    signed = {k: v for k, v in checkpoint.items() if k != "signature"}
    try:
        verifier.verify(base64.urlsafe_b64decode(str(checkpoint.get("signature", ""))),
                        chain.canonical(signed))
    except (InvalidSignature, ValueError, binascii.Error):
        return "signature does not match (checkpoint changed, or not signed by that key)"
    return None


def check_head(checkpoint: Mapping[str, Any], hashes: Mapping[int, str], events: int) -> str | None:
    """Return why ``checkpoint`` does not fit the chain, or None.

    Args:
        checkpoint: One checkpoint.
        hashes: Recomputed hash by event index (at least at ``events - 1`` of the checkpoint).
        events: How many events of the chain verified.
    """
    covered = checkpoint.get("events")
    if not isinstance(covered, int) or covered < 1:
        return "checkpoint names no events"
    if covered > events:
        return (f"checkpoint signed {covered} events, the chain verifies {events} (events "
                "removed at the end, or the chain is broken before)")
    if hashes.get(covered - 1) != checkpoint.get("head"):
        return (f"the chain's hash of event {covered - 1} is not the signed head (events "
                "rewritten since)")
    return None


def make(
    client: redis.Redis, signing: SigningKeys, sequence: str, *, series: str = DEFAULT_SERIES,
    only_if_moved: bool = False,
) -> dict[str, Any] | None:
    """Seal what is pending, then sign the chain's head and append the checkpoint.

    Returns:
        The checkpoint, or None when ``only_if_moved`` and the last one already covers the head.

    Raises:
        Conflict: the chain has no events yet (nothing to sign).
        SecretsNotConfigured: no signing key.
    """
    check_name(sequence)
    if not signing.private:
        signing.sign({})  # raises with the way to fix it
    length = chain.seal(client, sequence, series=series)
    if length == 0:
        if only_if_moved:
            return None
        raise Conflict(f"The {sequence} ledger of series {series!r} has no events yet: "
                       "nothing to sign")
    store = keys.seq_checkpoints(sequence, series)
    if only_if_moved:
        last = client.lindex(store, -1)
        if last is not None and json.loads(last).get("events") == length:
            return None
    head = client.lindex(keys.seq_chain(sequence, series), length - 1)
    checkpoint = signing.sign({"format": FORMAT, "series": series, "sequence": sequence,
                               "events": length, "head": head, "at": iso(utcnow())})
    client.rpush(store, json.dumps(checkpoint, sort_keys=True))
    return checkpoint


def stored(client: redis.Redis, sequence: str, *, series: str = DEFAULT_SERIES) -> list[Any]:
    """Every stored checkpoint of the chain, oldest first (unparsable ones as their text)."""
    out: list[Any] = []
    for raw in client.lrange(keys.seq_checkpoints(sequence, series), 0, -1):
        try:
            out.append(json.loads(raw))
        except ValueError:
            out.append(raw)
    return out


def check_all(found: list[Any], hashes: Mapping[int, str], events: int,
              public: Mapping[str, Ed25519PublicKey]) -> dict[str, Any] | None:
    """Return the first checkpoint that does not verify (``checkpoint`` index, ``reason``)."""
    for index, checkpoint in enumerate(found):
        if not isinstance(checkpoint, dict):
            return {"checkpoint": index, "reason": "checkpoint is not a JSON object"}
        reason = check_signature(checkpoint, public) or check_head(checkpoint, hashes, events)
        if reason is not None:
            return {"checkpoint": index, "reason": reason}
    return None


def wanted(found: list[Any]) -> set[int]:
    """The event indexes whose hashes the checkpoints in ``found`` sign."""
    return {c["events"] - 1 for c in found
            if isinstance(c, dict) and isinstance(c.get("events"), int) and c["events"] > 0}


def due(client: redis.Redis, config: Mapping[str, Any], owner: str = "scheduler") -> list[str]:
    """Sign a checkpoint of every chain that grew, at most once per LEDGER_CHECKPOINT_SECONDS.

    Run by every scheduler; a claim (SET NX EX) per chain makes one of them sign it per
    interval. Without a signing key, or with the interval 0, nothing happens.

    Returns:
        ``series/sequence`` of each chain signed now.
    """
    from coordinator.numbering import series as series_mod
    from coordinator.numbering.sequences import SEQUENCES

    interval = int(config.get("LEDGER_CHECKPOINT_SECONDS") or 0)
    signing = SigningKeys.from_config(config)
    if interval <= 0 or not signing.private:
        return []
    signed = []
    for series in [found["name"] for found in series_mod.list_series(client)]:
        for sequence in SEQUENCES:
            claim = keys.seq_checkpoint_claim(sequence, series)
            if not client.exists(keys.seq_events(sequence, series)):
                continue
            if client.set(claim, owner, nx=True, ex=interval) and make(
                    client, signing, sequence, series=series, only_if_moved=True):
                signed.append(f"{series}/{sequence}")
    return signed
