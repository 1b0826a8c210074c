"""``invoice-sync whmcs-module``: the WHMCS addon module as a zip an admin uploads to WHMCS.

The zip unpacks to ``modules/addons/invoice_sync/…`` inside the WHMCS root (see the module's
README.md and docs/CONNECT-WHMCS.md).
"""

from __future__ import annotations

import zipfile
from importlib import resources
from pathlib import Path

import click

NAME = "invoice_sync"
"""The module's name in WHMCS: its folder, its PHP file and its functions' prefix."""


def module_dir() -> Path:
    """Return the folder of the addon module: packaged in the wheel, or deploy/ in a checkout."""
    packaged = Path(str(resources.files(__package__))) / "whmcs_addon" / NAME
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "deploy" / "whmcs" / "modules" / "addons"
    return checkout / NAME


def write_zip(output: Path) -> list[str]:
    """Write the module to ``output`` as ``modules/addons/invoice_sync/…``; return the names."""
    source = module_dir()
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if not files:
        raise click.ClickException(f"the WHMCS addon module is missing from {source}")
    names = []
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            name = f"modules/addons/{NAME}/{path.relative_to(source).as_posix()}"
            archive.write(path, name)
            names.append(name)
    return names


def register(main: click.Group) -> None:
    """Add the ``whmcs-module`` command to the ``invoice-sync`` CLI."""

    @main.command("whmcs-module")
    @click.option("--output", default="invoice_sync.zip", show_default=True,
                  envvar="INVOICE_SYNC_WHMCS_MODULE_OUTPUT",
                  type=click.Path(dir_okay=False, path_type=Path),
                  help="Where to write the zip.")
    def whmcs_module(output: Path) -> None:
        """Write the WHMCS addon module as a zip to unpack in the WHMCS root directory."""
        names = write_zip(output)
        click.echo(f"wrote {output} ({len(names)} files): unzip it in your WHMCS root, then "
                   "System Settings → Addon Modules → invoice-sync → Activate")
