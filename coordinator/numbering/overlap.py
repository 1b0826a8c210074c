"""Decide whether two number formats can ever print the same string.

A format with its padding prints a *regular language*: literal characters, ``{YEAR}`` (four
digits, 1000–9999), ``{MONTH}`` (01–12), ``{DAY}`` (01–31) and ``{NUMBER}`` (exactly
``padding`` digits, not all zero, or with padding 0 a number 1–999999999999999 without
leading zeros). Each piece becomes a small acyclic automaton; two formats overlap exactly when
the product of their automata reaches both ends, and the path found is a string both print.
That is exact for the pieces as described, and errs on the safe side only where a date is
impossible (``{MONTH}`` 02 with ``{DAY}`` 31), so it never lets an overlap through.

Within one format, only ``{NUMBER}`` varies in width, so a printed string splits back into its
tags in exactly one way: a sequence that resets yearly prints distinct strings in distinct
years if and only if its format has ``{YEAR}`` (monthly: ``{YEAR}`` and ``{MONTH}``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.exceptions import Conflict

DIGITS = frozenset("0123456789")
NONZERO = DIGITS - {"0"}

PERIOD_TAGS = {"never": (), "yearly": ("{YEAR}",), "monthly": ("{YEAR}", "{MONTH}")}
"""The tags a format needs so that two periods of its reset never print the same string."""

MAX_DIGITS = 15
"""Digits of the largest number (``sequences.MAX_NUMBER``); unpadded numbers are 1–15 digits."""

Alternatives = Sequence[Sequence[frozenset[str]]]


def _piece(tag: str, padding: int) -> Alternatives:
    """Return the strings one tag prints, as alternatives of character-set sequences."""
    if tag == "{YEAR}":
        return [[NONZERO, DIGITS, DIGITS, DIGITS]]
    if tag == "{MONTH}":
        return [[frozenset("0"), NONZERO], [frozenset("1"), frozenset("012")]]
    if tag == "{DAY}":
        return [[frozenset("0"), NONZERO], [frozenset("12"), DIGITS],
                [frozenset("3"), frozenset("01")]]
    if tag == "{NUMBER}":
        if padding == 0:
            return [[NONZERO, *[DIGITS] * (width - 1)] for width in range(1, MAX_DIGITS + 1)]
        # Exactly `padding` digits, not all zero: k leading zeros, then a non-zero digit.
        return [[*[frozenset("0")] * k, NONZERO, *[DIGITS] * (padding - k - 1)]
                for k in range(padding)]
    raise ValueError(f"unknown tag {tag}")


@dataclass
class Automaton:
    """An acyclic automaton: ``edges[state]`` lists ``(characters, next state)``; 0 starts."""

    edges: list[list[tuple[frozenset[str], int]]]
    final: int

    @classmethod
    def of(cls, fmt: str, padding: int) -> Automaton:
        """Build the automaton of the strings ``fmt`` prints with ``padding``."""
        edges: list[list[tuple[frozenset[str], int]]] = [[]]
        current = 0
        i = 0
        while i < len(fmt):
            end = fmt.find("}", i) if fmt[i] == "{" else -1
            if end > i:
                alternatives, i = _piece(fmt[i:end + 1], padding), end + 1
            else:
                alternatives, i = [[frozenset(fmt[i])]], i + 1
            joined = len(edges)
            edges.append([])
            for chars in alternatives:
                state = current
                for k, charset in enumerate(chars):
                    if k == len(chars) - 1:
                        target = joined
                    else:
                        target = len(edges)
                        edges.append([])
                    edges[state].append((charset, target))
                    state = target
            current = joined
        return cls(edges, current)


def common_string(a: Automaton, b: Automaton) -> str | None:
    """Return a string both automata accept (the shortest), or None when there is none."""
    start = (0, 0)
    came: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        pair = queue.popleft()
        if pair == (a.final, b.final):
            out = []
            step = came[pair]
            while step is not None:
                pair, char = step
                out.append(char)
                step = came[pair]
            return "".join(reversed(out))
        for chars_a, next_a in a.edges[pair[0]]:
            for chars_b, next_b in b.edges[pair[1]]:
                both = chars_a & chars_b
                target = (next_a, next_b)
                if both and target not in came:
                    came[target] = (pair, min(both))
                    queue.append(target)
    return None


def shared_output(first: tuple[str, int], second: tuple[str, int]) -> str | None:
    """Return a string both ``(format, padding)`` pairs can print, or None if none exists."""
    return common_string(Automaton.of(*first), Automaton.of(*second))


def check_periods(fmt: str, reset: str, field: str = "format") -> None:
    """Refuse a format whose reset would print the same string in two periods (409).

    Raises:
        Conflict: the tags the reset needs are missing, under ``field``.
    """
    missing = [tag for tag in PERIOD_TAGS[reset] if tag not in fmt]
    if missing:
        raise Conflict(
            f"A {reset} reset restarts the numbers every period, so {fmt!r} would print the "
            f"same number again; the format needs {' and '.join(missing)}",
            {"json": {field: [f"A {reset} reset needs {' and '.join(missing)} in the format."]}})


def check_sequences(invoice: dict, credit_note: dict) -> None:
    """Refuse settings under which invoices and dedicated credit notes could share a number.

    Args:
        invoice, credit_note: Effective settings (``format``, ``padding``, ``dedicated``).

    Raises:
        Conflict: both sequences number documents and their formats can print one string.
    """
    if not credit_note.get("dedicated"):
        return  # credit notes draw from the invoice sequence: one sequence, one format
    example = shared_output((invoice["format"], invoice["padding"]),
                            (credit_note["format"], credit_note["padding"]))
    if example is not None:
        raise Conflict(
            f"Invoices ({invoice['format']!r}, padding {invoice['padding']}) and dedicated "
            f"credit notes ({credit_note['format']!r}, padding {credit_note['padding']}) could "
            f"both print {example!r}; give them formats that cannot meet",
            {"json": {"format": ["Invoices and dedicated credit notes need formats that "
                                 "can never print the same number."]}})
