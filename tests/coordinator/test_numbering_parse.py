"""Formatted numbers read back: parse is the inverse of formatting, for every format."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from coordinator.numbering import allocation
from coordinator.numbering.parse import parse, render

LITERAL = st.text(st.sampled_from("ABCINV-/_.# 0123456789"), max_size=4)
RESETS = {"never": (), "yearly": ("{YEAR}",), "monthly": ("{YEAR}", "{MONTH}")}


@st.composite
def formats(draw):
    reset = draw(st.sampled_from(sorted(RESETS)))
    tags = [*RESETS[reset], "{NUMBER}", *draw(st.lists(
        st.sampled_from(["{YEAR}", "{MONTH}", "{DAY}"]), max_size=2))]
    order = draw(st.permutations(tags))
    fmt = "".join(draw(LITERAL) + tag for tag in order) + draw(LITERAL)
    return fmt, draw(st.integers(0, 15)), reset


@given(formats(), st.dates(date(1000, 1, 1), date(9999, 12, 31)), st.data())
def test_parse_is_the_inverse_of_formatting(settings, day, data):
    fmt, padding, reset = settings
    most = 10**padding - 1 if padding else 10**15 - 1
    number = data.draw(st.integers(1, most))
    period = {"never": "all", "yearly": f"{day.year:04d}",
              "monthly": f"{day.year:04d}-{day.month:02d}"}[reset]
    assert parse(render(fmt, padding, day, number), fmt, padding, reset) == (period, number)


@given(formats(), st.dates(date(1000, 1, 1), date(9999, 12, 31)), st.integers(1, 10**6),
       st.integers(1, 10**6))
def test_distinct_numbers_of_one_period_read_back_distinct(settings, day, first, second):
    fmt, padding, reset = settings
    most = 10**padding - 1 if padding else 10**15 - 1
    first, second = min(first, most), min(second, most)
    a = parse(render(fmt, padding, day, first), fmt, padding, reset)
    b = parse(render(fmt, padding, day, second), fmt, padding, reset)
    assert (a == b) == (first == second)


def test_other_formats_and_zero_are_not_numbers_of_the_sequence():
    assert parse("INV-2026-000151", "INV-{YEAR}-{NUMBER}", 6, "yearly") == ("2026", 151)
    assert parse("INV-2026-151", "INV-{YEAR}-{NUMBER}", 6, "yearly") is None
    assert parse("CN-2026-000151", "INV-{YEAR}-{NUMBER}", 6, "yearly") is None
    assert parse("INV-2026-000000", "INV-{YEAR}-{NUMBER}", 6, "yearly") is None
    assert parse("2026/13/0007", "{YEAR}/{MONTH}/{NUMBER}", 4, "monthly") is None
    assert parse("", "INV-{YEAR}-{NUMBER}", 6, "yearly") is None
    # wider than the padding: a padding of 1 ends at 9 (allocation refuses 10: exhausted)
    assert parse("INV-10", "INV-{NUMBER}", 1, "never") is None
    assert parse("INV-9", "INV-{NUMBER}", 1, "never") == ("all", 9)


def test_render_prints_what_allocation_prints(redis_client):
    for reference, day in (("a", date(2026, 5, 5)), ("b", date(2026, 5, 6))):
        entry, _new = allocation.allocate(redis_client, "blue", "invoice", reference, day)
        assert entry["formatted"] == render("INV-{YEAR}-{NUMBER}", 6, day, int(entry["number"]))
