"""Benchmark: how often a run's portfolios hold a correct model, against pass@1, majority vote
and random picks of the same size, on the α grid and at a conformally calibrated α̂.

What runs: with ``--run``, nothing; the run's views are assembled from ``--store`` by DuckDB
(``optfolio.warehouse.connect``) with the settings the run was assembled with (its manifest).
Without ``--run``, first ``optfolio run`` (the real CLI in a subprocess: embedded Prefect, the
local model server, the Docker sandbox) on ``--limit`` problems of a labelled dataset, under a
run id derived from the arguments, so running the same command again resumes that run.

Printed per evaluator kind and unit (``candidate``, or ``answer``: candidates grouped by the
objective they reach), over the problems with a ground truth:
  * pass@1 and majority vote (per problem; the same for every unit and α);
  * per α of the run's grid (or ``--alphas``): mean portfolio size; the share of problems whose
    portfolio holds a correct model; the same share for two random baselines of the same size,
    s distinct valid units (``random_holds_correct``) and s raw generator samples, ⊥ included
    (``sample_holds_correct``); and the mean lowest judge score of each;
  * the calibrated α̂: problems are split into halves A and B by a seeded hash of their id
    (``--split-seed``); α̂ is calibrated on one half's conformity values (``alpha_sup``, from
    ``sql/conformity_scores.sql``) at level ``--delta`` (``optfolio.calibration``), then
    measured on the other half, at its portfolio sizes k*(α̂); both ways round (A → B, B → A).
    With too few calibration problems for δ, the smallest achievable δ is used, and said.

This is a measurement, not a test: nothing is asserted.

Usage: python bench/quality.py [--store DIR --run ID] [--dataset nl4opt
       --path ../shared/data/nl4opt/NL4OPT-E.json --limit 12 --candidates 6 --eval-samples 2
       --judge-samples 2] [--delta 0.1] [--split-seed 0] [--alphas 0.1,0.3,0.5] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
# The repository first, so its packages win over any same-named script in bench/.
sys.path.insert(0, str(REPO))

from optfolio import calibration, run_results, warehouse  # noqa: E402
from optfolio.evaluators import EVALUATORS  # noqa: E402
from optfolio.settings import default_store_root  # noqa: E402
from optfolio.store import RunStore  # noqa: E402

DEFAULT_PATH = REPO.parent / "shared" / "data" / "nl4opt" / "NL4OPT-E.json"
UNITS = ("candidate", "answer")  # display order
HALVES = ("A", "B")

# One row per (evaluator, unit, α) over the listed problems (those with a ground truth): the
# portfolio against both random baselines of the same size. Shares average booleans as 0/1.
ALPHA_ROWS_SQL = """
select
    evaluator,
    unit,
    alpha,
    count(*) as problems,
    avg(size) as mean_size,
    avg(portfolio_holds_correct::double) as holds_correct,
    avg(random_holds_correct::double) as random_holds_correct,
    avg(sample_holds_correct::double) as sample_holds_correct,
    avg(portfolio_min_judge) as min_judge,
    avg(random_min_judge) as random_min_judge,
    avg(sample_min_judge) as sample_min_judge
from quality
where basis = 'alpha' and list_contains($problems, problem_id) and list_contains($alphas, alpha)
group by evaluator, unit, alpha
"""

# pass@1 and majority vote over the listed problems.
BASELINES_SQL = """
select
    count(*) as problems,
    avg(pass_at_1) as pass_at_1,
    avg(majority_vote_correct::double) as majority_vote
from problem_baselines
where list_contains($problems, problem_id)
"""

GRID_SQL = "select alpha from alpha_grid order by alpha"
LABELLED_SQL = """
select problem_id, objective_truth is not null as labelled from problems order by problem_id
"""


@dataclass
class AlphaRow:
    alpha: float
    problems: int
    mean_size: float | None
    holds_correct: float | None
    random_holds_correct: float | None
    sample_holds_correct: float | None
    min_judge: float | None
    random_min_judge: float | None
    sample_min_judge: float | None


@dataclass
class Calibrated:
    calibrated_on: str  # half A or B
    measured_on: str
    calibration_problems: int
    never: int  # calibration problems without a correct unit: no α covers them
    delta: float | None  # the δ used (the smallest achievable when --delta is too small)
    alpha_hat: float | None  # None: not achievable on this half (see delta)
    calibration_coverage: float | None  # in-sample, on the calibration half at α̂
    calibration_mean_size: float | None
    pass_at_1: float | None  # of the measured half, for comparison
    majority_vote: float | None
    measured: AlphaRow | None  # the measured half at α̂


@dataclass
class Group:
    evaluator: str
    unit: str
    problems: int
    pass_at_1: float | None
    majority_vote: float | None
    alphas: list[AlphaRow] = field(default_factory=list)
    calibrated: list[Calibrated] = field(default_factory=list)


@dataclass
class Report:
    store: str
    run_id: str
    problems: int  # in the run
    labelled: int  # with a ground truth: the problems measured
    delta_requested: float
    split_seed: int
    halves: dict[str, list[str]]
    groups: list[Group]


# ---- running the pipeline -------------------------------------------------------------------


def derived_run_id(args: argparse.Namespace) -> str:
    """The same arguments, the same run id: running the benchmark again resumes its run."""
    what = {
        "dataset": args.dataset,
        "path": str(Path(args.path).resolve()),
        "limit": args.limit,
        "candidates": args.candidates,
        "eval_samples": args.eval_samples,
        "judge_samples": args.judge_samples,
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]
    return f"quality-{args.dataset}-{digest}"


def run_pipeline(args: argparse.Namespace, store: RunStore, run_id: str) -> None:
    """``optfolio run`` as a user would type it, on the embedded defaults. Its output goes to
    stderr, so that ``--json`` leaves stdout to the report."""
    beside = Path(sys.executable).with_name("optfolio")  # this interpreter's own install
    executable = str(beside) if beside.is_file() else shutil.which("optfolio")
    if executable is None:
        sys.exit("no optfolio command: install the project (make setup) or activate its venv")
    command = [
        executable,
        "run",
        *("--dataset", args.dataset, "--path", str(Path(args.path).resolve())),
        *("--limit", str(args.limit), "--candidates", str(args.candidates)),
        *("--eval-samples", str(args.eval_samples), "--judge-samples", str(args.judge_samples)),
        *("--store", str(store.root), "--run-id", run_id),
    ]
    print("running: " + " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=sys.stderr)
    if done.returncode != 0:
        sys.exit(f"optfolio run failed (exit {done.returncode}); the same command resumes it")


# ---- measuring -------------------------------------------------------------------------------


def split_halves(problem_ids: Sequence[str], seed: int) -> dict[str, list[str]]:
    """Halves A and B (A gets the odd one), by a seeded hash of each id: the same problems,
    the same halves, whatever their order in the dataset."""
    ordered = sorted(problem_ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).digest())
    middle = (len(ordered) + 1) // 2
    return {"A": sorted(ordered[:middle]), "B": sorted(ordered[middle:])}


def alpha_rows(
    con: duckdb.DuckDBPyConnection, problems: Sequence[str], alphas: Sequence[float]
) -> dict[tuple[str, str], list[AlphaRow]]:
    frame = con.execute(ALPHA_ROWS_SQL, {"problems": list(problems), "alphas": list(alphas)}).df()
    rows: dict[tuple[str, str], list[AlphaRow]] = {}
    for record in frame.sort_values("alpha").to_dict("records"):
        key = (record.pop("evaluator"), record.pop("unit"))
        values = {k: none_if_nan(v) for k, v in record.items()} | {
            "problems": int(record["problems"])
        }
        rows.setdefault(key, []).append(AlphaRow(**values))
    return rows


def baselines(con: duckdb.DuckDBPyConnection, problems: Sequence[str]) -> tuple[float | None, ...]:
    row = con.execute(BASELINES_SQL, {"problems": list(problems)}).fetchone()
    assert row is not None
    return none_if_nan(row[1]), none_if_nan(row[2])


def calibrate(
    problems: Sequence[calibration.CalibrationProblem],
    delta: float,
    evaluator: str,
    unit: str,
    run_id: str,
) -> tuple[float | None, calibration.Calibration | None]:
    """(δ used, the calibration): ``optfolio.calibration``'s rule at δ, or at the smallest δ
    it accepts for these problems when δ is too small for them (None, None: no δ < 1 is)."""
    never = sum(problem.alpha_sup is None for problem in problems)
    used = max(delta, calibration.achievable_delta(len(problems), never))
    if used >= 1.0:
        return None, None
    found = calibration.calibrate(problems, used, evaluator=evaluator, unit=unit, runs=[run_id])
    return used, found


def measure(
    store: RunStore,
    run_id: str,
    delta: float,
    split_seed: int,
    alphas: Sequence[float] | None = None,
) -> Report:
    run_results.check_run(store, run_id)
    settings = run_results.assembly_settings(store, run_id)
    with warehouse.connect(store, [run_id], settings) as con:
        labels = con.execute(LABELLED_SQL).fetchall()
        labelled = [pid for pid, known in labels if known]
        grid = [row[0] for row in con.execute(GRID_SQL).fetchall()]
        shown = grid if alphas is None else [a for a in grid if a in set(alphas)]
        halves = split_halves(labelled, split_seed)
        rows = alpha_rows(con, labelled, shown)
        pass_at_1, majority = baselines(con, labelled)
        half_baselines = {half: baselines(con, ids) for half, ids in halves.items()}
        ranked = {
            key: {p.problem_id: p for p in calibration.read_problems(con, *key)[0]} for key in rows
        }
    groups = [
        Group(evaluator, unit, len(labelled), pass_at_1, majority, rows[(evaluator, unit)])
        for evaluator in EVALUATORS
        for unit in UNITS
        if (evaluator, unit) in rows
    ]
    # α̂ of each group and direction, then one more assembly with every α̂ on the grid: the
    # measured half's portfolios at α̂ and their random baselines of the same sizes.
    wanted: list[tuple[Group, str, str, list, float | None, calibration.Calibration | None]] = []
    for group in groups:
        problems = ranked[(group.evaluator, group.unit)]
        for calibrated_on, measured_on in (("A", "B"), ("B", "A")):
            half = [problems[pid] for pid in halves[calibrated_on] if pid in problems]
            used, found = calibrate(half, delta, group.evaluator, group.unit, run_id)
            wanted.append((group, calibrated_on, measured_on, half, used, found))
    hats = sorted({found.alpha for *_, found in wanted if found is not None})
    settings = run_results.assembly_settings(store, run_id, hats)
    with warehouse.connect(store, [run_id], settings) as con:
        at_hat = {half: alpha_rows(con, ids, hats) for half, ids in halves.items()}
    for group, calibrated_on, measured_on, half, used, found in wanted:
        measured = None
        if found is not None:
            key = (group.evaluator, group.unit)
            rows_at_hat = at_hat[measured_on].get(key, [])
            measured = next((r for r in rows_at_hat if r.alpha == found.alpha), None)
        pass_half, majority_half = half_baselines[measured_on]
        group.calibrated.append(
            Calibrated(
                calibrated_on=calibrated_on,
                measured_on=measured_on,
                calibration_problems=len(half),
                never=sum(problem.alpha_sup is None for problem in half),
                delta=used,
                alpha_hat=None if found is None else found.alpha,
                calibration_coverage=None if found is None else found.empirical_coverage,
                calibration_mean_size=None if found is None else found.mean_size,
                pass_at_1=pass_half,
                majority_vote=majority_half,
                measured=measured,
            )
        )
    return Report(
        store=str(store.root),
        run_id=run_id,
        problems=len(labels),
        labelled=len(labelled),
        delta_requested=delta,
        split_seed=split_seed,
        halves=halves,
        groups=groups,
    )


def none_if_nan(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


# ---- printing --------------------------------------------------------------------------------

COLUMNS = (
    ("mean_size", "size", "{:5.2f}"),
    ("holds_correct", "holds", "{:5.3f}"),
    ("random_holds_correct", "rnd unit", "{:5.3f}"),
    ("sample_holds_correct", "rnd sample", "{:5.3f}"),
    ("min_judge", "min judge", "{:5.3f}"),
    ("random_min_judge", "rnd unit mj", "{:5.3f}"),
    ("sample_min_judge", "rnd sample mj", "{:5.3f}"),
)


def fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def row_line(label: str, row: AlphaRow) -> str:
    cells = [fmt(getattr(row, name), pattern).rjust(len(title)) for name, title, pattern in COLUMNS]
    return f"  {label:>16}  " + "  ".join(cells)


def print_report(report: Report) -> None:
    print(
        f"run {report.run_id} in {report.store}: {report.problems} problems,"
        f" {report.labelled} with a ground truth (measured)"
    )
    halves = "; ".join(f"{h} = {', '.join(ids)}" for h, ids in report.halves.items())
    print(f"halves (split seed {report.split_seed}): {halves}")
    print(
        "columns: holds = share of problems whose portfolio holds a correct model; rnd unit ="
        " s random distinct valid units; rnd sample = s random raw samples (⊥ included);"
        " mj = mean lowest judge score"
    )
    header = "  " + "α".rjust(16) + "  " + "  ".join(title for _, title, _ in COLUMNS)
    for group in report.groups:
        print(
            f"\n{group.evaluator} evaluator, unit {group.unit}: {group.problems} problems,"
            f" pass@1 {fmt(group.pass_at_1)}, majority vote {fmt(group.majority_vote)}"
        )
        print(header)
        for row in group.alphas:
            print(row_line(f"{row.alpha:g}", row))
        for cal in group.calibrated:
            print(calibrated_line(cal, report.delta_requested))
            if cal.measured is not None and cal.alpha_hat is not None:
                print(row_line(f"α̂ = {cal.alpha_hat:.4g}", cal.measured))


def calibrated_line(cal: Calibrated, delta_requested: float) -> str:
    n = cal.calibration_problems
    where = f"  calibrated on {cal.calibrated_on} (n = {n}, {cal.never} without a correct unit)"
    if cal.delta is None or cal.alpha_hat is None:
        return f"{where}: no α̂, no δ < 1 is achievable"
    said = f"δ = {cal.delta:.4g}"
    if cal.delta > delta_requested:
        said += f", the smallest achievable: δ = {delta_requested:g} is not"
    return (
        f"{where}, {said}:\n    α̂ = {cal.alpha_hat:.4g}; on {cal.calibrated_on} it holds"
        f" {fmt(cal.calibration_coverage)} at mean size {fmt(cal.calibration_mean_size, '{:.2f}')};"
        f" measured on {cal.measured_on} (pass@1 {fmt(cal.pass_at_1)}, majority vote"
        f" {fmt(cal.majority_vote)}):"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="Default: $OPTFOLIO_STORE or ./store")
    parser.add_argument("--run", default=None, help="Read this run only (run nothing)")
    parser.add_argument("--dataset", default="nl4opt")
    parser.add_argument("--path", default=str(DEFAULT_PATH))
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--candidates", type=int, default=6, help="N")
    parser.add_argument("--eval-samples", type=int, default=2, help="m")
    parser.add_argument("--judge-samples", type=int, default=2)
    parser.add_argument("--delta", type=float, default=0.1, help="Calibration level δ")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument(
        "--alphas", default=None, help="Only these α of the run's grid, comma-separated"
    )
    parser.add_argument("--json", action="store_true", help="Print the numbers as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.delta < 1:
        parser.error(f"--delta {args.delta}: must be in (0, 1)")
    store = RunStore(args.store or default_store_root())
    run_id = args.run
    if run_id is None:
        run_id = derived_run_id(args)
        run_pipeline(args, store, run_id)
    alphas = None if args.alphas is None else [float(a) for a in args.alphas.split(",")]
    report = measure(store, run_id, args.delta, args.split_seed, alphas)
    if args.json:
        print(json.dumps(asdict(report), indent=1, ensure_ascii=False))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
