"""One clock (coordinator/clock.py): every module asks it, none reads the system time itself."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

from coordinator.clock import iso, utcnow

ROOT = Path(__file__).resolve().parents[2]


def test_utcnow_is_aware_utc_and_iso_writes_seconds_with_z():
    now = utcnow()
    assert now.utcoffset() == dt.timedelta(0)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert iso(dt.datetime(2026, 11, 21, 12, 15, 2, 999_999, tzinfo=plus_two)) == (
        "2026-11-21T10:15:02Z")


def test_no_module_reads_the_system_clock_but_the_clock():
    """datetime.now()/utcnow()/today() and date.today() only in coordinator/clock.py."""
    found = []
    for path in (ROOT / "coordinator").rglob("*.py"):
        if path.name == "clock.py" or "demo" in path.parts:
            continue  # the demo seeds fake WHMCS data with local dates on purpose
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"now", "utcnow", "today"}
                    and isinstance(node.func.value, ast.Attribute | ast.Name)
                    and getattr(node.func.value, "attr", getattr(node.func.value, "id", ""))
                    in {"datetime", "date"}):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
