"""The archived block: sealed ledger events and their hashes packed into one Redis string.

A sequence's events and hashes live in two Redis lists (``{ser:R}:S:events`` and ``…:chain``),
which cost ~250 bytes per event. Once sealed and old, ``numbering.compaction`` moves them,
a block of them at a time, into one string key per block (``{ser:R}:S:block:<start>``)::

    b"ISL1" | start (8 bytes, big-endian) | count (4 bytes)
           | the first 4 bytes of each event's hash | the last event's whole hash (32 bytes)
           | zlib(every event's JSON text + "\\n")

The events are the very strings the lists held (what the chain hashes, byte for byte). The
chain is recomputed when it is read (``chain.chained``): the whole hash of the block's last
event holds every event before it to the chain with SHA-256's full strength (a changed event
changes every hash after it), and the 4-byte prefix of each event's hash names which event
changed. Reading a block back (:func:`unpack`) gives every index its event and hash prefix, or
a :class:`Broken` marker naming why it cannot: a changed byte in the prefixes makes that
event's hash not match; one in the compressed part stops decompression (or changes the text)
at that point, and the first event not read back whole is named.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"ISL1"
"""The first bytes of every block (format version 1)."""

_HEADER = struct.Struct(">4sQI")
PREFIX = 4
"""Bytes of each archived event's hash kept (to name a changed event; see above)."""
_HASH = 32
_CHUNK = 256  # compressed bytes fed at a time, so a damaged stream is placed to ~one event


@dataclass(frozen=True)
class Broken:
    """Stands for an archived event that cannot be read back, and says why."""

    reason: str


@dataclass(frozen=True)
class Block:
    """A block read back: ``(raw event or Broken, hash prefix hex or None)`` per index, and the
    whole hash of its last event ("" when the block could not be placed at all)."""

    records: list[tuple[str | Broken, str | None]]
    last: str


def pack(start: int, events: list[str], hashes: list[str]) -> bytes:
    """Return the block of ``events`` (raw JSON strings) and their hex ``hashes`` from ``start``."""
    if len(events) != len(hashes):
        raise ValueError("one hash per event")
    text = "".join(f"{event}\n" for event in events).encode("utf-8")
    return (_HEADER.pack(MAGIC, start, len(events))
            + b"".join(bytes.fromhex(h)[:PREFIX] for h in hashes) + bytes.fromhex(hashes[-1])
            + zlib.compress(text, 9))


def unpack(start: int, data: bytes | None) -> Block:
    """Read back the block stored for ``start``; one that cannot be placed at all gives one
    Broken record."""
    where = f"archived block from event {start}"
    if data is None:
        return Block([(Broken(f"{where} is missing"), None)], "")
    if len(data) < _HEADER.size:
        return Block([(Broken(f"{where} is damaged (too short)"), None)], "")
    magic, found_start, count = _HEADER.unpack_from(data)
    if magic != MAGIC or found_start != start or count == 0:
        return Block([(Broken(f"{where} is damaged or misplaced (its header says "
                              f"{magic!r}, {count} events from event {found_start})"), None)], "")
    body = _HEADER.size + PREFIX * count + _HASH
    hashes = [data[at:at + PREFIX].hex() for at in range(_HEADER.size, body - _HASH, PREFIX)]
    if len(data) <= body:
        return Block([(Broken(f"{where} is damaged (no events after its hashes)"), None)], "")
    return Block(_events(where, start, count, hashes, data[body:]), data[body - _HASH:body].hex())


def _events(where: str, start: int, count: int, hashes: list[str],
            compressed: bytes) -> list[tuple[str | Broken, str | None]]:
    lines, complete = _inflate(compressed)
    out: list[tuple[str | Broken, str | None]] = []
    for index in range(count):
        if index < len(lines):
            out.append((lines[index], hashes[index]))
        else:
            out.append((Broken(f"{where} is damaged: event {start + index} cannot be read "
                               "back"), hashes[index]))
            return out
    if len(lines) != count:
        out[-1] = (Broken(f"{where} is damaged: it holds {len(lines)} events, its header "
                          f"says {count}"), hashes[-1])
    elif not complete:
        out[-1] = (Broken(f"{where} is damaged after its last event"), hashes[-1])
    return out


def _inflate(compressed: bytes) -> tuple[list[str], bool]:
    """Return the events decompressed (each line whole) and whether the stream was sound.

    Fed a chunk at a time, so damage stops the output near the damaged event: every line
    before it comes back; a line cut or not valid UTF-8 ends the list."""
    inflater, text = zlib.decompressobj(), b""
    try:
        for at in range(0, len(compressed), _CHUNK):
            text += inflater.decompress(compressed[at:at + _CHUNK])
        text += inflater.flush()
        sound = inflater.eof and not inflater.unused_data
    except zlib.error:
        sound = False
    lines: list[str] = []
    for line in text.split(b"\n")[:-1]:  # the part after the last newline is not whole
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            return lines, False
    return lines, sound
