"""Build hook: ship the WHMCS addon module (deploy/whmcs/…) inside the wheel.

Everything else is in pyproject.toml. The module's PHP lives once, where WHMCS admins look for
it in a checkout; ``build_py`` copies it under ``coordinator/systems/whmcs_addon/`` so that an
installed ``invoice-sync whmcs-module`` can package it. Editable installs read it from deploy/.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ADDON = Path("deploy/whmcs/modules/addons/invoice_sync")


class BuildPyWithAddon(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "coordinator" / "systems" / "whmcs_addon" / ADDON.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ADDON, target)


setup(cmdclass={"build_py": BuildPyWithAddon})
