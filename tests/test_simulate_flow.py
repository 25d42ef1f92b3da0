"""The ``simulate`` flow under Prefect, and the ``optfolio simulate`` CLI contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

CONTRACT_COLUMNS = [
    "K",
    "generator",
    "evaluator_error",
    "seed",
    "alpha",
    "portfolio_size",
    "coverage",
]


def test_flow_runs_under_the_prefect_harness(prefect_harness, tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.simulate import simulate
    from optfolio.simulation import SimulationParameters

    parameters = SimulationParameters(
        out=str(tmp_path), Ks=[10, 20], evaluator_errors=[0.0, 0.5], seeds=3
    )
    # Called plainly (no return_state): the sync flow returns its value whatever event loop
    # an earlier test (Playwright's sync API) left in this thread.
    outcome = simulate(parameters)
    table = pq.read_table(outcome["results"])
    assert table.num_rows == 2 * 4 * 2 * 3 * 51
    assert [Path(f).name for f in outcome["figures"]] == [
        f"simulation_{g}.png" for g in ("aligned", "misaligned", "uniform", "weakly_aligned")
    ]
    assert all(Path(f).stat().st_size > 10_000 for f in outcome["figures"])

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[outcome["flow_run_name"]])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        assert run.state is not None and run.state.is_completed()
        names = sorted(
            r.name
            for r in client.read_task_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run.name]))
            )
        )
        artifact_keys = [a.key for a in client.read_artifacts()]
    assert {"simulate-K10", "simulate-K20"} <= set(names)
    assert "simulation-figures" in artifact_keys

    # A re-run with the same design reuses the written parts: same results, no duplicates.
    again = simulate(parameters)
    assert pq.read_table(again["results"]).equals(table)
    parts = sorted(p.name for p in (tmp_path / "candidates").rglob("*.parquet"))
    assert parts == ["K10.parquet", "K20.parquet"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("optfolio")
    return subprocess.run(
        [str(cli), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PREFECT_HOME": str(cwd / ".prefect")},
        timeout=600,
    )


@pytest.mark.slow
def test_cli_contract(tmp_path: Path) -> None:
    out = tmp_path / "study"
    done = run_cli("simulate", "--out", str(out), "--K", "10,20", "--seeds", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pq.read_table(out / "simulation")
    assert table.column_names == CONTRACT_COLUMNS
    assert table.num_rows == 2 * 4 * 5 * 2 * 51
    keys = set(zip(*(table.column(c).to_pylist() for c in CONTRACT_COLUMNS[:5]), strict=True))
    assert len(keys) == table.num_rows
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        f"simulation_{g}.png" for g in ("aligned", "misaligned", "uniform", "weakly_aligned")
    ]
    queried = run_cli(
        "sql",
        "select count(*) as n from portfolio_coverage",
        "--store",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert queried.returncode == 0, queried.stderr
    assert queried.stdout.strip() == f'[{{"n":{2 * 4 * 5 * 2 * 51 * 2}}}]'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--out", "x", "--K", "10,abc"], "--K"),
        (["simulate", "--out", "x", "--K", "1"], "K=1"),
        (["simulate", "--out", "x", "--generators", "clever"], "generator 'clever'"),
        (["simulate", "--out", "x", "--errors", "1.5"], "evaluator_error=1.5"),
        (["sql", "select * from nowhere", "--store", "."], "query failed"),
        (["sql", "select 1", "--store", "/does/not/exist"], "no such directory"),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("optfolio: error:") and message in lines[0]


def test_every_command_has_help(tmp_path: Path) -> None:
    import typer.main

    from cli import app

    group = typer.main.get_group(app)
    paths = [[]]
    for name, command in group.commands.items():
        paths.append([name])
        paths.extend([name, sub] for sub in getattr(command, "commands", {}))
    for path in paths:
        done = run_cli(*path, "--help", cwd=tmp_path)
        assert done.returncode == 0, (path, done.stderr)
        assert "Usage" in done.stdout
