"""Architecture rules: the domain library never imports Prefect."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import optfolio


def test_optfolio_imports_no_prefect() -> None:
    modules = [m.name for m in pkgutil.walk_packages(optfolio.__path__, "optfolio.")]
    assert "optfolio.portfolio" in modules and "optfolio.cli" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
        "print(leaked[:3])\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
