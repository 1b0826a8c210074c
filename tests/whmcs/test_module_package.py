"""`invoice-sync whmcs-module`: the zip an admin unpacks into WHMCS, from a checkout or wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from click.testing import CliRunner

from coordinator.cli import main
from coordinator.systems import addon

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "modules/addons/invoice_sync/invoice_sync.php",
    "modules/addons/invoice_sync/hooks.php",
    "modules/addons/invoice_sync/lib/numbering.php",
    "modules/addons/invoice_sync/README.md",
}


def test_the_zip_holds_the_module_where_whmcs_looks_for_it(tmp_path: Path) -> None:
    output = tmp_path / "invoice_sync.zip"
    result = CliRunner().invoke(main, ["whmcs-module", "--output", str(output)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(output) as archive:
        names = set(archive.namelist())
        assert names == EXPECTED
        source = addon.module_dir()
        for name in names:
            relative = name.removeprefix("modules/addons/invoice_sync/")
            assert archive.read(name) == (source / relative).read_bytes()
    assert addon.write_zip(tmp_path / "again.zip") == sorted(EXPECTED)


def test_a_missing_module_is_named_with_where_it_was_looked_for(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(addon, "module_dir", lambda: tmp_path)
    result = CliRunner().invoke(main, ["whmcs-module", "--output", str(tmp_path / "m.zip")])
    assert result.exit_code == 1
    assert result.output == f"Error: the WHMCS addon module is missing from {tmp_path}\n"


def test_the_wheel_carries_the_module(tmp_path: Path) -> None:
    """A non-editable install (the README's quick start) has the module to package too."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("invoice_sync-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {n.removeprefix("coordinator/systems/whmcs_addon/")
                    for n in archive.namelist() if n.startswith("coordinator/systems/whmcs_addon/")}
    assert {f"modules/addons/{n}" for n in packaged} == EXPECTED
    # Installed from that wheel (no checkout around), `whmcs-module` packages the module it
    # carries.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    found = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path; from coordinator.systems import addon; "
         "print(addon.module_dir()); print(addon.write_zip(Path('m.zip')))"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
        text=True, check=True, timeout=120).stdout.splitlines()
    assert found == [str(site / "coordinator/systems/whmcs_addon/invoice_sync"),
                     str(sorted(EXPECTED))]
