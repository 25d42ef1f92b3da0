"""Architecture rules, read from the source: the domain library ``optfolio`` imports no
Prefect and none of the packages built on it (flows, tasks, servers, the command line), at any
depth, lazily or not; every stage module in ``tasks/`` is one pipeline stage."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import optfolio

ROOT = Path(__file__).resolve().parents[1]
# What the domain core must never import: the orchestrator and the layers that use the core.
OUTSIDE_THE_CORE = ("prefect", "prefect_dask", "dask", "flows", "tasks", "servers", "cli")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from … import`` statement names, anywhere in the file
    (inside functions too), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (  # importlib.import_module("name") with a literal name
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_the_domain_core_imports_nothing_outside_it_at_any_depth() -> None:
    sources = sorted((ROOT / "optfolio").rglob("*.py"))
    assert ROOT / "optfolio" / "portfolio.py" in sources
    leaks = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources
        for line, module in imported_modules(path)
        if module.split(".")[0] in OUTSIDE_THE_CORE
    ]
    assert leaks == []


def test_the_import_scan_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "def later():\n"
        "    from flows.portfolio_run import portfolio_run\n"
        "    import importlib\n"
        "    importlib.import_module('prefect.deployments')\n"
    )
    modules = [module for _, module in imported_modules(sample)]
    assert modules == ["os", "flows.portfolio_run", "importlib", "prefect.deployments"]


def test_importing_every_domain_module_loads_no_prefect() -> None:
    modules = [m.name for m in pkgutil.walk_packages(optfolio.__path__, "optfolio.")]
    assert "optfolio.portfolio" in modules and "optfolio.runs" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in"
        f" {OUTSIDE_THE_CORE!r})\n"
        "print(leaked[:3])\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_flows_only_compose_and_servers_and_the_cli_live_outside_the_core() -> None:
    assert not (ROOT / "optfolio" / "cli").exists()
    assert not (ROOT / "optfolio" / "localmodel").exists()
    assert not (ROOT / "optfolio" / "orchestrator.py").exists()
    for package in ("cli", "servers", "flows", "tasks", "sandbox"):
        assert (ROOT / package / "__init__.py").is_file(), package
