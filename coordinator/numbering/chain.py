"""The ledger's hash chain: seal events with SHA-256, verify them, check an export offline.

Every change to a sequence's ledger (a number issued, confirmed, voided; settings changed;
next number raised) appends one JSON event to ``{ser:R}:S:events`` inside the same Lua script
that makes the change, so there is no event without its change and no change without its
event, and the event's ``seq`` is its index (gap-free, in the order Redis applied them).

Lua in Redis has no SHA-256, so hashes are computed here, right after, and appended to
``{ser:R}:S:chain`` ("sealing", :func:`seal`, idempotent: the script appends only when the chain
still has the length the sealer read). The window between an event and its seal is one round
trip on the worker's sealer thread (:class:`Sealer`), which starts as the change is answered
(or until the next verify/export, which seal first); an unsealed event
is still ordered and counted, and an event whose ``seq`` is not its index is never sealed.
``allocate.lua`` returns the unsealed events (its own, and any concurrent allocation's) with
the chain's length and head, so sealing a new number is that one round trip
(:func:`seal_appended`), not a read followed by a write.

Canonical encoding (what an auditor re-computes)::

    hash(event) = sha256(json.dumps({**event, "prev": previous hash}, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=False).encode("utf-8")).hexdigest()

with ``previous hash`` = 64 zeros for the first event (``seq`` 0). Signed checkpoints of the
head (``checkpoints.py``) are checked by :func:`verify` and :func:`check_export` too. An
upgraded ledger's chain starts at its first event after the upgrade: numbers issued before are
counted by :func:`verify` as ``unchained_numbers`` (they are in the ledger, but not in the chain).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import NEVER_DECODE

from coordinator import keys
from coordinator.numbering import blocks, checkpoints, scripts
from coordinator.numbering.sequences import DEFAULT_SERIES, check_name

log = logging.getLogger(__name__)

GENESIS = "0" * 64
"""The ``prev`` of the first event of every chain."""

PAGE = 500
"""Events read (and sealed) per round trip."""

NUMBERING_EVENTS = ("issued", "reissued", "recovered")
"""Event types that take a number (each adds one entry to the ledger; ``recovered``: a number
found in use by ``invoice-sync recover``)."""

FORMAT = "invoice-sync-ledger/1"
"""The export format's name, in its header line."""


def canonical(obj: Any) -> bytes:
    """Encode ``obj`` as the chain hashes it: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(event: dict[str, Any], prev: str) -> str:
    """Return the SHA-256 (hex) of ``event`` chained to ``prev``."""
    return hashlib.sha256(canonical({**event, "prev": prev})).hexdigest()


def seal(client: redis.Redis, sequence: str, *, series: str = DEFAULT_SERIES) -> int:
    """Hash every unsealed event of ``sequence`` and append the hashes; return the chain length.

    Stops (leaving the rest unsealed, for :func:`verify` to name) at an event that does not
    parse or whose ``seq`` is not its index.
    """
    events_key, chain_key = keys.seq_events(sequence, series), keys.seq_chain(sequence, series)
    while True:
        pipe = client.pipeline(transaction=False)
        pipe.llen(chain_key)
        pipe.lindex(chain_key, -1)
        length, head = pipe.execute()
        raws = client.lrange(events_key, length, length + PAGE - 1)
        hashes: list[str] = []
        prev = head or GENESIS
        for index, raw in enumerate(raws, start=length):
            event = _parse(raw)
            if event is None or event.get("seq") != index:
                break
            prev = event_hash(event, prev)
            hashes.append(prev)
        if not hashes:
            return length
        reply = scripts.SEAL(client, [chain_key], [length, *hashes])
        if int(reply) != length + len(hashes):
            continue  # another coordinator sealed meanwhile: read again
        if len(hashes) < PAGE:
            return int(reply)


@dataclass(frozen=True)
class Appended:
    """The unsealed events of a sequence as a script that appended to it saw them, and the
    chain they continue."""

    series: str
    sequence: str
    length: int
    """The chain's length then: the index the first unsealed event has."""
    head: str
    """The chain's last hash then ("" for an empty chain)."""
    events: tuple[str, ...]
    """The raw events from index ``length`` on, in order (empty: the chain had fallen behind)."""


def seal_appended(client: redis.Redis, appended: Appended) -> int:
    """Seal ``appended`` in one round trip; return the chain length.

    The hashes are computed from what the appending script returned (no read). When it
    returned no events (too many waited), found one out of place, or another sealer moved the
    chain meanwhile without covering these events, this falls back to :func:`seal`, which
    reads.
    """
    prev, hashes = appended.head or GENESIS, []
    for index, raw in enumerate(appended.events, start=appended.length):
        event = _parse(raw)
        if event is None or event.get("seq") != index:
            return seal(client, appended.sequence, series=appended.series)
        prev = event_hash(event, prev)
        hashes.append(prev)
    if not hashes:
        return seal(client, appended.sequence, series=appended.series)
    chain_key = keys.seq_chain(appended.sequence, appended.series)
    start = appended.length
    while True:  # start only grows, and stays below the end until a return
        length = int(scripts.SEAL(client, [chain_key], [start, *hashes[start - appended.length:]]))
        if length < start:
            # The chain is shorter than the script saw it: let seal() judge what is there.
            return seal(client, appended.sequence, series=appended.series)
        if length >= appended.length + len(hashes):
            return length  # sealed now, or already by another sealer
        start = length  # another sealer sealed part of these events: seal the rest


class Sealer:
    """Seal what allocations appended from one background thread per process (one per app).

    :meth:`submit` only notes the work and returns: the request thread goes back to answering
    requests, and the seal (SHA-256 of each event, one SEAL round trip and its fsync) runs on
    the sealer's own thread. Work for a sequence that is still waiting is coalesced: only the
    latest events handed over are kept, and they cover every earlier one (each allocation
    script returns every event unsealed at its time), so under load one SEAL seals many
    allocations.

    Nothing is ever lost by coalescing or by dying: an event is in Redis before its number is
    answered, and a seal that did not run (the process was killed, Redis refused it) is
    caught up by the next one, whose script returns every event still unsealed, or by the
    next verify or export, which seal first. The thread starts on the first submit (after
    gunicorn's fork) and ends after ``idle`` seconds without work.
    """

    def __init__(self, idle: float = 5.0) -> None:
        self.idle = idle
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._waiting: dict[tuple[str, str], tuple[redis.Redis, Appended]] = {}
        self._sealing = 0
        self._thread: threading.Thread | None = None

    def submit(self, client: redis.Redis, appended: Appended) -> None:
        """Have ``appended`` sealed by the sealer's thread (coalesced with waiting work)."""
        if self._pid != os.getpid():
            self._reset()  # a forked child: the parent's thread and lock are not ours
        key = (appended.series, appended.sequence)
        with self._cond:
            waiting = self._waiting.get(key)
            if waiting is None or _covers_more(appended, waiting[1]):
                self._waiting[key] = (client, appended)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ledger-sealer",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def drain(self, timeout: float) -> bool:
        """Wait until everything submitted so far is sealed (or failed); False after
        ``timeout`` seconds (tests wait for the sealer's thread with it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting or self._sealing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._waiting:
                    self._cond.wait(self.idle)
                if not self._waiting:
                    self._thread = None
                    self._cond.notify_all()
                    return
                key = next(iter(self._waiting))
                client, work = self._waiting.pop(key)
                self._sealing += 1
            try:
                seal_appended(client, work)
            except Exception:  # noqa: BLE001 - the next seal, verify or export catches up
                log.warning("sealing %s/%s failed; sealed by the next allocation or verify",
                            work.series, work.sequence, exc_info=True)
            finally:
                with self._cond:
                    self._sealing -= 1
                    self._cond.notify_all()


def _covers_more(new: Appended, old: Appended) -> bool:
    """Whether sealing ``new`` seals at least what sealing ``old`` would: a script that
    returned no events (sealing fell behind) makes its seal read and seal everything."""
    if not new.events or not old.events:
        return not new.events
    return new.length + len(new.events) > old.length + len(old.events)


def _parse(raw: str) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def event_count(client: redis.Redis, sequence: str, *, series: str = DEFAULT_SERIES) -> int:
    """Return how many events ``sequence`` of ``series`` has ever appended: the ``seq`` the
    next one will carry (a cursor that consumes events from here sees only new ones)."""
    return int(client.llen(keys.seq_events(sequence, series)))


def first_listed(client: redis.Redis, sequence: str, *, series: str = DEFAULT_SERIES) -> int:
    """Return the first index :func:`events_from` can read: the events before it were
    archived into blocks by compaction (a reader whose cursor is below it must start over)."""
    return int(client.hget(keys.seq_archived(sequence, series), "events") or 0)


def events_from(
    client: redis.Redis, sequence: str, start: int, count: int = PAGE, *,
    series: str = DEFAULT_SERIES,
) -> list[tuple[int, dict[str, Any] | None]]:
    """Return up to ``count`` events ``(seq, event)`` from index ``start`` on, in order (an
    event that does not parse, or was archived — below :func:`first_listed` — comes as None).
    Readers that follow the ledger (the forecaster's reconciliation) go through here."""
    raws = client.lrange(keys.seq_events(sequence, series), start, start + count - 1)
    return [(index, _parse(raw)) for index, raw in enumerate(raws, start=start)]


def chained(
    client: redis.Redis, sequence: str, *, series: str = DEFAULT_SERIES
) -> Iterator[tuple[int, str | blocks.Broken | None, str | None]]:
    """Yield ``(index, raw event, stored hash)`` over the archived blocks (``compaction``),
    then over the longer of events and chain; an archived event that cannot be read back is a
    :class:`~coordinator.numbering.blocks.Broken` (and nothing after it is yielded).

    An archived event's hash is recomputed from the one before: the stored hash when its
    stored prefix (or, for a block's last event, its whole stored hash) matches; otherwise the
    stored prefix or hash itself, which :func:`check` then names as not matching.
    """
    events_key, chain_key = keys.seq_events(sequence, series), keys.seq_chain(sequence, series)
    archived = int(client.hget(keys.seq_archived(sequence, series), "events") or 0)
    start, prev = 0, GENESIS
    while start < archived:
        block = blocks.unpack(start, client.execute_command(
            "GET", keys.seq_block(sequence, start, series), **{NEVER_DECODE: True}))
        for offset, (raw, prefix) in enumerate(block.records):
            stored = block.last if offset == len(block.records) - 1 else prefix
            event = _parse(raw) if isinstance(raw, str) else None
            if event is not None and prefix is not None:
                recomputed = event_hash(event, prev)
                if recomputed == stored or (stored == prefix and recomputed.startswith(prefix)):
                    stored = recomputed
            yield start + offset, raw, stored
            if isinstance(raw, blocks.Broken) or stored is None:
                return
            prev = stored
        start += len(block.records)
    while True:
        pipe = client.pipeline(transaction=False)
        pipe.lrange(events_key, start, start + PAGE - 1)
        pipe.lrange(chain_key, start, start + PAGE - 1)
        raws, hashes = pipe.execute()
        for offset in range(max(len(raws), len(hashes))):
            yield (start + offset, raws[offset] if offset < len(raws) else None,
                   hashes[offset] if offset < len(hashes) else None)
        if len(raws) < PAGE and len(hashes) < PAGE:
            return
        start += PAGE


def check(records: Iterable[tuple[int, str | blocks.Broken | None, str | None]],
          period: str | None = None, hashes: dict[int, str] | None = None) -> dict[str, Any]:
    """Recompute a chain from ``(index, raw event, stored hash)`` records, in order.

    Args:
        records: The chain, in order.
        period: Count the events of this period as ``entries``.
        hashes: Fill in the verified hash of each index already a key (for checkpoints).

    Returns:
        ``{"ok", "events", "entries", "head", "first_bad"?}``: ``entries`` counts the events
        of ``period`` (every event without one); ``first_bad`` names the first event that does
        not verify (``seq``, ``id`` when it has one, ``reason``).
    """
    prev, count, entries, issued = GENESIS, 0, 0, 0
    for index, raw, stored in records:
        bad = check_one(index, raw, stored, prev)
        if bad is not None:
            return {"ok": False, "events": count, "entries": entries, "head": prev,
                    "issued": issued, "first_bad": bad}
        event = json.loads(raw)
        prev = stored
        if hashes is not None and index in hashes:
            hashes[index] = stored
        count += 1
        issued += event.get("type") in NUMBERING_EVENTS
        if period is None or event.get("period") == period or (
                event.get("id", "").split(":")[-2:-1] == [period]):
            entries += 1
    return {"ok": True, "events": count, "entries": entries, "head": prev, "issued": issued}


def check_one(index: int, raw: str | blocks.Broken | None, stored: str | None,
              prev: str) -> dict | None:
    """Return why event ``index`` does not chain from ``prev`` to ``stored``, or None."""
    if isinstance(raw, blocks.Broken):
        return {"seq": index, "reason": raw.reason}
    if raw is None:
        return {"seq": index, "reason": "event missing (its hash is in the chain)"}
    event = _parse(raw)
    if event is None:
        return {"seq": index, "reason": "event is not a JSON object"}
    named = {"seq": index, **({"id": event["id"]} if "id" in event else {})}
    if event.get("seq") != index:
        return {**named, "reason": f"event {event.get('seq')!r} found where event {index} "
                                   "belongs (removed or re-ordered)"}
    if stored is None:
        return {**named, "reason": "event not sealed"}
    if event_hash(event, prev) != stored:
        return {**named, "reason": "hash does not match (event changed, or an earlier one)"}
    return None


def verify(
    client: redis.Redis, sequence: str, period: str | None = None, *,
    series: str = DEFAULT_SERIES, signing: checkpoints.SigningKeys | None = None,
) -> dict[str, Any]:
    """Seal what is pending, then recompute the whole chain of ``sequence`` of ``series``,
    and check every signed checkpoint against it with the public keys of ``signing``.

    A chain is checked from its first event whatever ``period`` is (a period's events cannot
    be verified without those before them); ``period`` only picks what ``entries`` counts.
    """
    check_name(sequence)
    seal(client, sequence, series=series)
    found = checkpoints.stored(client, sequence, series=series)
    hashes: dict[int, str] = dict.fromkeys(checkpoints.wanted(found), "")
    result = check(chained(client, sequence, series=series), period, hashes)
    result["checkpoints"] = len(found)
    if result["ok"]:
        public = (signing or checkpoints.SigningKeys()).public()
        bad = checkpoints.check_all(found, hashes, result["events"], public)
        if bad is not None:
            result.update(ok=False, first_bad=bad)
    # Numbers issued before the upgrade that brought the chain are in the ledger only.
    unchained = max(0, _issued_numbers(client, sequence, series) - result.pop("issued"))
    result.update(series=series, sequence=sequence, period=period, unchained_numbers=unchained)
    return result


def _issued_numbers(client: redis.Redis, sequence: str, series: str) -> int:
    periods = client.smembers(keys.seq_periods(sequence, series))
    pipe = client.pipeline(transaction=False)
    for period in periods:
        pipe.zcard(keys.seq_ledger_order(sequence, period, series))
        pipe.hget(keys.seq_settled(sequence, period, series), "count")  # numbering/settled.py
    return sum(int(n or 0) for n in pipe.execute())


def export_records(
    client: redis.Redis, sequence: str, period: str | None = None, *,
    series: str = DEFAULT_SERIES, signing: checkpoints.SigningKeys | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the export's records: header, every chained event, every signed checkpoint,
    then an ``end`` record.

    The whole chain is exported (it is verified from its start); ``period`` is recorded in the
    header for the reader, with the public keys of ``signing`` (PEM by key id) for
    convenience: an auditor verifies with the key the operator gave them, not the file's.
    """
    check_name(sequence)
    seal(client, sequence, series=series)
    public = (signing or checkpoints.SigningKeys()).public()
    yield {"kind": "header", "format": FORMAT, "series": series, "sequence": sequence,
           "period": period, "genesis": GENESIS,
           "hash": "sha256(json.dumps({**event, 'prev': prev}, sort_keys=True, "
                   "separators=(',', ':'), ensure_ascii=False).encode('utf-8'))",
           "public_keys": {kid: checkpoints.public_pem(key) for kid, key in public.items()}}
    prev, count = GENESIS, 0
    for index, raw, stored in chained(client, sequence, series=series):
        event = _parse(raw) if isinstance(raw, str) else None
        yield {"kind": "event", "seq": index, "prev": prev, "hash": stored, "event": event}
        prev, count = stored or "", count + 1
    for checkpoint in checkpoints.stored(client, sequence, series=series):
        yield {"kind": "checkpoint", "checkpoint": checkpoint}
    yield {"kind": "end", "events": count, "head": prev}


def check_export(records: Iterable[dict[str, Any]],
                 public_keys: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify an export's records offline (no Redis): chain, order, count, head, checkpoints.

    Args:
        records: The export's records, in order.
        public_keys: The Ed25519 public keys (by key id) the checkpoints must be signed with:
            the ones the operator gave the auditor. None: the keys the file's header carries
            (then ``keys_from_file`` is true, and only the key ids say whose they are).
    """
    prev, count, header, end, found = GENESIS, 0, None, None, []
    hashes: list[str] = []
    for record in records:
        kind = record.get("kind")
        if kind == "header":
            header = record
        elif kind == "end":
            end = record
        elif kind == "checkpoint":
            found.append(record.get("checkpoint"))
        elif kind == "event":
            if end is not None:
                return {"ok": False, "events": count, "first_bad": {
                    "seq": record.get("seq"), "reason": "event after the end record"}}
            event = record.get("event")
            if not isinstance(event, dict):
                return {"ok": False, "events": count, "first_bad": {
                    "seq": count, "reason": "event missing or not an object"}}
            named = {"seq": count, **({"id": event["id"]} if "id" in event else {})}
            if event.get("seq") != count:
                return {"ok": False, "events": count, "first_bad": {
                    **named, "reason": f"event {event.get('seq')!r} found where event "
                                       f"{count} belongs (removed or re-ordered)"}}
            if record.get("seq") != count:
                return {"ok": False, "events": count, "first_bad": {
                    **named, "reason": f"the record of event {count} says seq "
                                       f"{record.get('seq')!r} (the file was edited)"}}
            if record.get("prev") != prev or event_hash(event, prev) != record.get("hash"):
                return {"ok": False, "events": count, "first_bad": {
                    **named, "reason": "hash does not match (event changed, or an earlier one)"}}
            prev, count = record["hash"], count + 1
            hashes.append(prev)
    if header is None or header.get("format") != FORMAT:
        return {"ok": False, "events": count, "first_bad": {"reason": "no header of " + FORMAT}}
    if end is None or end.get("events") != count or end.get("head") != prev:
        return {"ok": False, "events": count, "first_bad": {
            "seq": count, "reason": "end record missing or does not match (events removed "
                                    "at the end, or the file was cut)"}}
    from_file = public_keys is None
    if from_file:
        try:
            public_keys = {kid: checkpoints.load_public_pem(pem)
                           for kid, pem in (header.get("public_keys") or {}).items()}
        except ValueError:
            return {"ok": False, "events": count, "first_bad": {
                "reason": "the header's public_keys are not Ed25519 public keys"}}
    bad = checkpoints.check_all(found, dict(enumerate(hashes)), count, public_keys)
    result = {"ok": bad is None, "events": count, "head": prev, "checkpoints": len(found),
              "signed_by": sorted({str(c.get("key_id")) for c in found if isinstance(c, dict)}),
              "keys_from_file": from_file}
    if bad is not None:
        result["first_bad"] = bad
    return result
