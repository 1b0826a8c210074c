"""`invoice-sync demo` runs the real pieces end to end and shows one sound sequence."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_and_prints_one_sequence_without_duplicates() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_SYNC")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "coordinator", "demo"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "all checks held" in out

    rows = re.findall(r"^\s+(\d+)\s+((?:INV|CN|OUK)-\d{4}-\d{6})\s+(\w+)\s+#(\d+)\s+(\w+)$",
                      out, re.MULTILINE)
    invoices = [r for r in rows if r[1].startswith("INV-")]
    credit_notes = [r for r in rows if r[1].startswith("CN-")]
    orange = [r for r in rows if r[1].startswith("OUK-")]  # another legal entity: own series
    assert len(invoices) == 8 and len(credit_notes) == 1 and len(orange) == 3
    assert [int(r[0]) for r in invoices] == list(range(1, 9))
    assert [int(r[0]) for r in orange] == [1, 2, 3]
    assert len({r[1] for r in rows}) == len(rows)  # no number twice
    assert {r[2] for r in invoices} == {"blue", "red"} and {r[2] for r in orange} == {"orange"}
    assert {r[4] for r in rows} == {"confirmed"}
    assert credit_notes[0][2] == "blue"
    for formatted in (r[1] for r in rows):  # and each WHMCS holds its numbers
        assert len(re.findall(rf"#\d+\s+{formatted}\s", out)) == 1
    assert re.search(r"^\s+orange-uk\s+3 invoices", out, re.MULTILINE)  # revenue by series

    data_dir = re.search(r"data in (\S+?)\)", out).group(1)
    assert not Path(data_dir).exists()  # cleaned up
