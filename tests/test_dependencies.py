"""Every third-party module the product imports comes from a distribution pyproject.toml
declares: the base dependencies, or the extra of the code that imports it (imported lazily, so
the module still loads without the extra). Scale-out on Dask is such an extra: without it a
thread run works and a Dask run fails naming the install command."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.test_layout import imported_modules

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = ("optfolio", "tasks", "flows", "sandbox", "servers", "cli")
# Code that only runs with an extra installed, by path prefix: the extra it may import from.
EXTRA_OF_CODE = {"flows/portfolio_run.py": "scale", "servers/local_model/": "local"}
INSTALL_SCALE = "pip install 'optfolio[scale]'"


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared_distributions() -> dict[str | None, set[str]]:
    """Distributions pyproject.toml declares: under None the base ones, else per extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(requirements: list[str]) -> set[str]:
        found = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r) for r in requirements)
        return {normalized(match.group(0)) for match in found if match}

    declared: dict[str | None, set[str]] = {None: names(project["dependencies"])}
    for extra, requirements in project["optional-dependencies"].items():
        declared[extra] = names(requirements)
    return declared


def module_level_lines(path: Path) -> set[int]:
    """Lines of the imports that run when the module is imported (not inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines: set[int] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                lines.add(child.lineno)
            visit(child)

    visit(tree)
    return lines


def undeclared_imports(
    sources: list[Path], root: Path, declared: dict[str | None, set[str]]
) -> list[str]:
    """One line per third-party import no declared distribution provides, and per import of
    an extra's module made when its module is imported (it would fail without the extra)."""
    distributions = packages_distributions()
    problems = []
    for path in sources:
        relative = path.relative_to(root).as_posix()
        extras = [e for prefix, e in EXTRA_OF_CODE.items() if relative.startswith(prefix)]
        extra = extras[0] if extras else None
        eager = module_level_lines(path)
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in PRODUCT_PACKAGES or top == "__future__":
                continue
            providers = {normalized(d) for d in distributions.get(top, [])}
            where = f"{relative}:{line} imports {module}"
            if providers & declared[None]:
                continue
            if extra is None or not providers & declared[extra]:
                problems.append(f"{where}: {sorted(providers) or 'not installed'} not declared")
            elif line in eager:
                problems.append(f"{where}: from the {extra} extra, at import time")
    return problems


def test_every_third_party_import_of_the_product_is_declared() -> None:
    sources = sorted(p for package in PRODUCT_PACKAGES for p in (ROOT / package).rglob("*.py"))
    assert ROOT / "servers" / "prefect_services.py" in sources
    declared = declared_distributions()
    assert {"pyyaml", "requests", "jinja2", "markupsafe"} <= declared[None]
    assert "prefect-dask" in declared["scale"] and "prefect-dask" not in declared[None]
    assert {"fastapi", "uvicorn", "xllamacpp"} <= declared["local"]
    assert undeclared_imports(sources, ROOT, declared) == []


def test_the_scan_reports_undeclared_and_eager_extra_imports(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    sample = flows / "portfolio_run.py"
    sample.write_text(
        "import json\n"
        "import yaml\n"
        "import hypothesis\n"  # installed (dev), but not a dependency of the product
        "from prefect_dask import DaskTaskRunner\n"  # the scale extra, yet at import time
        "from optfolio import report\n"
        "def later():\n"
        "    import prefect_dask\n"  # lazily: fine
        "    import xllamacpp\n"  # the local extra, not this module's
    )
    problems = undeclared_imports([sample], tmp_path, declared_distributions())
    assert problems == [
        "flows/portfolio_run.py:3 imports hypothesis: ['hypothesis'] not declared",
        "flows/portfolio_run.py:4 imports prefect_dask: from the scale extra, at import time",
        "flows/portfolio_run.py:8 imports xllamacpp: ['xllamacpp'] not declared",
    ]


def without_prefect_dask(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import prefect_dask, as without the scale extra."""
    shadow = tmp_path / "no-scale-extra"
    shadow.mkdir()
    (shadow / "prefect_dask.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'prefect_dask'\", name='prefect_dask')\n"
    )
    path = os.pathsep.join([str(shadow), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"}


def test_without_the_scale_extra_threads_work_and_dask_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        f"for package in {PRODUCT_PACKAGES!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    for module in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        importlib.import_module(module.name)\n"
        "from flows.portfolio_run import task_runner_for\n"
        "from optfolio.errors import OptfolioError\n"
        "from optfolio.run_config import PortfolioRunParameters\n"
        "from prefect.task_runners import ThreadPoolTaskRunner\n"
        "runner = task_runner_for(PortfolioRunParameters(task_runner='thread'))\n"
        "assert isinstance(runner, ThreadPoolTaskRunner), runner\n"
        "assert not {'prefect_dask', 'dask', 'distributed'} & set(sys.modules)\n"
        "try:\n"
        "    task_runner_for(PortfolioRunParameters(task_runner='dask'))\n"
        "except OptfolioError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=without_prefect_dask(tmp_path),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert INSTALL_SCALE in done.stdout, done.stdout


def test_a_dask_run_without_the_extra_fails_in_one_line(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("optfolio")
    done = subprocess.run(
        [str(cli), "run", "--task-runner", "dask", "--limit", "1", "--store", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=without_prefect_dask(tmp_path),
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1] == (
        "optfolio: error: task_runner 'dask' needs the scale extra, which is not installed:"
        f" {INSTALL_SCALE}"
    )
    assert "Traceback" not in done.stderr
