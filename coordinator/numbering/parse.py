"""Read a formatted invoice number back: ``INV-2026-000151`` -> (period ``2026``, 151).

The inverse of the formatting allocation does (``allocate.lua``, mirrored by :func:`render`):
the sync guard uses it to notice a WHMCS that already shows a number the coordinator's counter
has not reached (the store is behind reality: lost data, an old backup).

Within one format only ``{NUMBER}`` can vary in width, and with a padding it has exactly that
many digits, so a string that matches splits back into its tags in one way only.
"""

from __future__ import annotations

import re
from datetime import date

_TAG = re.compile(r"\{(YEAR|MONTH|DAY|NUMBER)\}")
_PATTERNS = {"YEAR": r"\d{4}", "MONTH": r"\d{2}", "DAY": r"\d{2}"}


def render(fmt: str, padding: int, day: date, number: int) -> str:
    """Format ``number`` for a document dated ``day`` exactly as ``allocate.lua`` does."""
    digits = str(number).rjust(padding, "0") if padding > 0 else str(number)
    parts = {"YEAR": f"{day.year:04d}", "MONTH": f"{day.month:02d}", "DAY": f"{day.day:02d}",
             "NUMBER": digits}
    return _TAG.sub(lambda match: parts[match.group(1)], fmt)


def pattern(fmt: str, padding: int) -> re.Pattern[str]:
    """Return the regular expression that matches exactly the strings ``fmt`` prints.

    A tag used twice must print the same value twice (a back-reference).
    """
    pieces, seen, position = [], set(), 0
    for match in _TAG.finditer(fmt):
        pieces.append(re.escape(fmt[position:match.start()]))
        tag = match.group(1)
        if tag in seen:
            pieces.append(f"(?P={tag})")
        else:
            seen.add(tag)
            body = _PATTERNS.get(tag) or (
                rf"\d{{{padding}}}" if padding > 0 else r"[1-9]\d{0,14}")
            pieces.append(f"(?P<{tag}>{body})")
        position = match.end()
    pieces.append(re.escape(fmt[position:]))
    return re.compile("".join(pieces))


def parse(formatted: str, fmt: str, padding: int, reset: str) -> tuple[str, int] | None:
    """Return ``(period, number)`` of a string ``fmt`` printed, or None if it could not have.

    Args:
        formatted: The number as WHMCS shows it (its ``invoicenum``).
        fmt: The sequence's format (``INV-{YEAR}-{NUMBER}``).
        padding: The sequence's padding (0: no padding).
        reset: ``never`` | ``yearly`` | ``monthly``: which period the tags name.
    """
    match = pattern(fmt, padding).fullmatch(formatted)
    if match is None:
        return None
    number = int(match.group("NUMBER"))
    if number < 1:
        return None
    if reset == "never":
        return "all", number
    year = match.groupdict().get("YEAR")
    if year is None:
        return None
    if reset == "yearly":
        return year, number
    month = match.groupdict().get("MONTH")
    if month is None or not 1 <= int(month) <= 12:
        return None
    return f"{year}-{month}", number
