"""The dashboard's files ship in the wheel, its vendored libraries carry their licences, and no
page loads anything from the internet."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
UI = ROOT / "coordinator" / "ui"


def test_templates_and_static_files_are_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["coordinator"]
    shipped = {path for pattern in patterns for path in (ROOT / "coordinator").glob(pattern)}
    needed = {p for folder in ("templates", "static") for p in (UI / folder).rglob("*")
              if p.is_file()}
    assert needed and needed <= shipped, sorted(str(p) for p in needed - shipped)


def test_every_vendored_library_has_its_licence_next_to_it():
    vendor = UI / "static" / "vendor"
    for library in (p for p in vendor.iterdir() if p.is_dir()):
        files = {p.name for p in library.iterdir()}
        assert any(name.startswith("LICENSE") for name in files), library
        assert any(name.endswith(".js") for name in files), library
        assert library.name in (vendor / "README.md").read_text()


def test_templates_reference_no_outside_address():
    outside = re.compile(r"""(?:src|href|action)\s*=\s*["'](?:https?:)?//""", re.I)
    for template in (UI / "templates").glob("*.html"):
        assert not outside.search(template.read_text()), template
    script = (UI / "static" / "ui.js").read_text()
    assert "http://" not in script and "https://" not in script
