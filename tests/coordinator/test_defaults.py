"""Every setting the coordinator reads is in coordinator/defaults.py, with its docstring."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from coordinator import defaults

ROOT = Path(__file__).resolve().parents[2]
READS = (
    re.compile(r"""config(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']"""),
    re.compile(r"""environ(?:\.get\(|\[)\s*["']INVOICE_SYNC_([A-Z][A-Z0-9_]+)["']"""),
    re.compile(r"""getenv\(\s*["']INVOICE_SYNC_([A-Z][A-Z0-9_]+)["']"""),
)


def _documented() -> dict[str, str | None]:
    """Names assigned in defaults.py, each with the string literal right after it."""
    body = ast.parse(Path(defaults.__file__).read_text()).body
    found = {}
    for node, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            doc = (following.value.value if isinstance(following, ast.Expr)
                   and isinstance(following.value, ast.Constant) else None)
            found[node.targets[0].id] = doc
    return found


def test_every_setting_read_is_in_defaults():
    read = {}
    for path in (ROOT / "coordinator").rglob("*.py"):
        for pattern in READS:
            for name in pattern.findall(path.read_text()):
                read.setdefault(name, str(path.relative_to(ROOT)))
    missing = {name: where for name, where in read.items() if name not in _documented()}
    assert missing == {}
    assert {"REDIS_CLIENT", "SYSTEM_URL_RESOLVER", "FORECASTER_TODAY", "REDIS_SERVER"} <= set(read)


def test_every_default_has_a_docstring():
    assert [name for name, doc in _documented().items() if not doc] == []
