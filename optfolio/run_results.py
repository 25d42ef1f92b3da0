"""What a finished portfolio run holds, read through the SQL views for figures and the report.

A run is assembled with the parameters it ran with (its manifest: α grid, sizes, random draws,
seed), so the figures and the review page show the same portfolios as ``assembled/``. A store
without a manifest (a synthetic one, say) falls back to the default assembly settings.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from optfolio import calibration, warehouse
from optfolio.errors import InputError
from optfolio.evaluators import EVALUATORS
from optfolio.portfolio import UNITS, check_alpha
from optfolio.runs import manifest_path
from optfolio.store import RunStore, check_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def known_runs(store: RunStore) -> list[str]:
    """Runs with at least one problem written."""
    return store.runs("problems")


def check_run(store: RunStore, run_id: str) -> None:
    """Refuse a store that is not there or a run it does not hold, naming what it holds."""
    if not store.root.is_dir():
        raise InputError(f"--store {store.root}: no such directory")
    runs = known_runs(store)
    if run_id not in runs:
        listed = ", ".join(runs) if runs else "none"
        raise InputError(f"run {run_id!r} is not in store {store.root} (runs there: {listed})")


def run_manifest(store: RunStore, run_id: str) -> dict | None:
    path = manifest_path(store, run_id)
    return json.loads(path.read_text()) if path.is_file() else None


def assembly_settings(
    store: RunStore, run_id: str, extra_alphas: Sequence[float] = ()
) -> warehouse.AssemblySettings:
    """The settings ``portfolio_run`` assembled the run with, plus any α asked for on top."""
    for alpha in extra_alphas:
        check_alpha(alpha)
    manifest = run_manifest(store, run_id)
    parameters = None if manifest is None else manifest["parameters"]
    settings = warehouse.AssemblySettings.from_parameters(parameters, extra_alphas)
    return calibration.calibrated_settings(settings, calibration.run_calibration(store, run_id))


@contextlib.contextmanager
def connect_run(
    store: RunStore, run_id: str, extra_alphas: Sequence[float] = ()
) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB over one run's tables and views, assembled as the run was."""
    check_run(store, run_id)
    settings = assembly_settings(store, run_id, extra_alphas)
    with warehouse.connect(store, [run_id], settings) as con:
        yield con


def query(
    con: duckdb.DuckDBPyConnection, sql: str, parameters: Sequence[object] = ()
) -> pd.DataFrame:
    return con.execute(sql, list(parameters)).df()


def calibration_problems(
    store: RunStore, run_ids: Sequence[str], evaluator: str, unit: str
) -> tuple[list[calibration.CalibrationProblem], int]:
    """The labelled problems of RUN_IDS for calibrating EVALUATOR's ranking of UNIT, each run
    ranked as it was assembled (its own seed), and how many problems had no ground truth.
    A run without any labelled problem is refused, naming it."""
    if not run_ids:
        raise InputError("give at least one --run to calibrate on")
    problems: list[calibration.CalibrationProblem] = []
    skipped = 0
    for run_id in dict.fromkeys(run_ids):
        with connect_run(store, run_id) as con:
            found, unlabelled = calibration.read_problems(con, evaluator, unit)
        if not found:
            raise InputError(
                f"run {run_id!r} has no problem with ground truth ({unlabelled} without):"
                " calibration needs problems with a known optimum"
            )
        problems += found
        skipped += unlabelled
    return problems, skipped


# ---- the figures' data -------------------------------------------------------------------


def fixed_size_min_judge(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Fig. 5: per problem and s, the portfolio's and each random draw's lowest judge score."""
    return query(con, "select * from fixed_size_min_judge order by all")


def correct_coverage(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per problem, evaluator and α: portfolio size and the share of correct candidates held."""
    return query(con, "select * from portfolio_correct_coverage order by all")


def summary_by_alpha(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The candidate-level dataset summary on the α grid (portfolio, both random baselines,
    pass@1, majority vote)."""
    return query(
        con,
        "select * from dataset_summary where basis = 'alpha' and unit = 'candidate' order by all",
    )


def run_problem_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("select count(*) from problems").fetchone()[0])


# ---- the run's figures -------------------------------------------------------------------


def figures_dir(store: RunStore, run_id: str) -> Path:
    """Where a run's figures are written: ``<store>/figures/run_id=<id>/``."""
    return store.root / "figures" / f"run_id={check_name('run id', run_id)}"


def plot_run_figures(store: RunStore, run_id: str) -> dict[str, Figure]:
    """Fig. 5 and the two α sweeps of a run, by name, drawn from the SQL views."""
    from optfolio import figures

    with connect_run(store, run_id) as con:
        fixed_size = fixed_size_min_judge(con)
        coverage = correct_coverage(con)
        summary = summary_by_alpha(con)
        problems = run_problem_count(con)
    sizes = assembly_settings(store, run_id).sizes
    return figures.plot_run(fixed_size, coverage, summary, run_id, problems, sizes)


def write_run_figures(store: RunStore, run_id: str, out_dir: Path | None = None) -> list[Path]:
    """The run's figures as PNGs in ``out_dir`` (default: :func:`figures_dir`)."""
    from optfolio import figures

    target = out_dir or figures_dir(store, run_id)
    return figures.save_figures(plot_run_figures(store, run_id), target)


SUMMARY_COLUMNS = {
    "evaluator": "evaluator",
    "unit": "unit",
    "selection": "portfolio",
    "problems": "problems",
    "mean_portfolio_size": "mean size",
    "mean_portfolio_min_judge": "min judge",
    "mean_random_min_judge": "random min judge",
    "share_portfolio_holds_correct": "holds correct",
    "share_random_holds_correct": "random holds correct",
    "share_sample_holds_correct": "raw samples hold correct",
    "mean_pass_at_1": "pass@1",
    "mean_pass_at_size": "pass@s",
    "share_majority_vote_correct": "majority vote",
}


def summary_table(con: duckdb.DuckDBPyConnection, alphas: Sequence[float]) -> pd.DataFrame:
    """The dataset summary for people: the fixed sizes s and the given α, one row each per
    evaluator kind (in registry order) and unit (candidates first), with a ``selection``
    column saying which portfolio a row is about (the run's calibrated α̂ marked)."""
    frame = query(
        con,
        """
        select * from dataset_summary
        where basis = 'size' or list_contains(?, alpha) or calibrated
        order by list_position(?, evaluator), list_position(?, unit), basis, alpha, size
        """,
        [list(alphas), list(EVALUATORS), list(UNITS)],
    )
    frame["selection"] = [
        f"best s = {int(row.size)}"
        if row.basis == "size"
        else f"α = {row.alpha:g}"
        + (" (calibrated)" if pd.notna(row.calibrated) and row.calibrated else "")
        for row in frame.itertuples()
    ]
    return frame[list(SUMMARY_COLUMNS)].rename(columns=SUMMARY_COLUMNS)
