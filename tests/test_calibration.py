"""Conformal calibration of α (optfolio/calibration.py, sql/conformity_scores.sql, optfolio
calibrate): the rule equals a plain reference written from its definition, it refuses what it
cannot guarantee naming the achievable δ, the guarantee holds on fresh synthetic problems, the
SQL gives the Python values, and the command stores what a run then assembles with."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optfolio import calibration, run_results
from optfolio.calibration import CalibrationProblem, conformal_alpha, conformity_value
from optfolio.errors import InputError
from optfolio.parameters import closed_alpha_grid
from optfolio.portfolio import MASS_TOLERANCE
from optfolio.run_config import PortfolioRunParameters
from optfolio.runs import open_run
from optfolio.store import RunStore
from tests.plugins.run_fixtures import SYNTHETIC_PROBLEMS, build_finished_run

CLI = Path(sys.executable).with_name("optfolio")


# ---- the rule against a plain reference ----------------------------------------------------


def reference_alpha(values: list[float | None], delta: str) -> float | None:
    """From the definition: k = ⌊δ(n + 1)⌋ (δ as the decimal typed), the k-th smallest value
    with "never" below every number; None where no α̂ exists. α̂ sits 2·tolerance below it
    (the sup is not attained), at 0 at least, and is 1 for a value of 1 (rank 1: attained)."""
    k = math.floor(Fraction(delta) * (len(values) + 1))
    if k < 1:
        return None
    ordered = sorted(values, key=lambda v: -math.inf if v is None else v)
    kth = ordered[k - 1]
    if kth is None:
        return None
    return 1.0 if kth == 1.0 else max(0.0, kth - 2 * MASS_TOLERANCE)


conformity_values = st.lists(
    st.one_of(
        st.none(),
        st.sampled_from([0.0, 1e-7, 0.25, 0.5, 1.0]),  # ties, the clamp and rank 1
        st.floats(0.0, 1.0, allow_nan=False),
    ),
    max_size=60,
)
typed_deltas = st.integers(1, 999).map(lambda thousandths: f"0.{thousandths:03d}")


@settings(max_examples=400, deadline=None)
@given(values=conformity_values, delta=typed_deltas)
def test_the_rule_equals_the_reference(values: list[float | None], delta: str) -> None:
    expected = reference_alpha(values, delta)
    if expected is None:
        with pytest.raises(InputError, match="achievable δ"):
            conformal_alpha(values, float(delta))
        return
    rule = conformal_alpha(values, float(delta))
    assert rule.alpha == expected
    assert (rule.problems, rule.never) == (len(values), values.count(None))
    assert rule.floor == values.count(None) / len(values)
    assert rule.achievable_delta == (values.count(None) + 1) / (len(values) + 1)


@settings(max_examples=200, deadline=None)
@given(problems=st.integers(1, 200), data=st.data())
def test_the_named_achievable_delta_is_accepted_and_anything_below_it_refused(
    problems: int, data: st.DataObject
) -> None:
    never = data.draw(st.integers(0, problems - 1))
    values: list[float | None] = [None] * never + [0.5] * (problems - never)
    with pytest.raises(InputError) as refused:
        conformal_alpha(values, achievable_below(problems, never))
    named = refused.value.args[0].split("smallest achievable δ is ")[1].split(" ")[0]
    assert float(named) >= calibration.achievable_delta(problems, never)
    if float(named) < 1:
        assert conformal_alpha(values, float(named)).alpha == 0.5 - 2 * MASS_TOLERANCE


def achievable_below(problems: int, never: int) -> float:
    return (never + 1) / (problems + 1) * (1 - 1e-6)


def test_refusals_are_one_line_naming_the_achievable_delta() -> None:
    with pytest.raises(InputError) as too_few:
        conformal_alpha([0.5, 0.7, 0.9, 1.0, 0.3], 0.1)  # ⌊0.1 · 6⌋ = 0
    assert "smallest achievable δ is 0.1667 (= 1/6)" in str(too_few.value)
    assert "n = 5" in str(too_few.value) and "\n" not in str(too_few.value)

    values = [None, None] + [0.5] * 17  # k = ⌊0.1 · 20⌋ = 2: the 2nd smallest is "never"
    with pytest.raises(InputError) as never:
        conformal_alpha(values, 0.1)
    assert "smallest achievable δ is 0.15 (= 3/20)" in str(never.value)
    assert "without a correct unit (2 have none)" in str(never.value)
    assert conformal_alpha(values, 0.15).alpha == 0.5 - 2 * MASS_TOLERANCE

    with pytest.raises(InputError, match=r"none of the 30 .* smallest achievable δ is 1$"):
        conformal_alpha([None] * 30, 0.5)
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(InputError, match="outside"):
            conformal_alpha([0.5] * 30, bad)


# ---- the guarantee on synthetic problems ---------------------------------------------------

UNITS_PER_PROBLEM = 8
CALIBRATION_PROBLEMS = 45  # k = ⌊0.1 · 46⌋ = 4: exact coverage would be 1 − 4/46 ≈ 0.913
FRESH_PROBLEMS = 100
REPETITIONS = 200
DELTA = 0.1


def synthetic_problem(rng: np.random.Generator, index: int) -> CalibrationProblem:
    """Units with Dirichlet probabilities, ~10% ⊥, each valid one correct with the problem's
    own rate, ranked by an evaluator that scores correct units higher, with noise."""
    rate = rng.uniform(0.4, 0.9)
    p = rng.dirichlet(np.full(UNITS_PER_PROBLEM, 0.7))
    valid = rng.random(UNITS_PER_PROBLEM) > 0.1
    correct = valid & (rng.random(UNITS_PER_PROBLEM) < rate)
    score = correct + rng.normal(0.0, 1.0, UNITS_PER_PROBLEM)
    order = sorted(range(UNITS_PER_PROBLEM), key=lambda i: (not valid[i], -score[i]))
    ranked_valid = [bool(valid[i]) for i in order]
    ranked_correct = [bool(correct[i]) for i in order]
    first = next((r for r, c in enumerate(ranked_correct, start=1) if c), None)
    return CalibrationProblem(
        run_id="synthetic",
        problem_id=f"p{index}",
        ranked_p=tuple(float(p[i]) for i in order if valid[i]),
        first_correct_rank=first,
        alpha_sup=conformity_value([float(p[i]) for i in order], ranked_valid, ranked_correct),
    )


def test_coverage_on_fresh_problems_is_at_least_one_minus_delta_on_average() -> None:
    coverages, alphas = [], []
    for seed in range(REPETITIONS):
        rng = np.random.default_rng(seed)
        calibrating = [synthetic_problem(rng, i) for i in range(CALIBRATION_PROBLEMS)]
        fresh = [synthetic_problem(rng, i) for i in range(FRESH_PROBLEMS)]
        values = [problem.alpha_sup for problem in calibrating]
        rule = conformal_alpha(values, DELTA)  # no refusal with these rates (≤ 3 "never")
        assert rule.alpha == reference_alpha(values, str(DELTA))
        alphas.append(rule.alpha)
        coverages.append(np.mean([problem.holds_correct(rule.alpha) for problem in fresh]))
    mean, spread = float(np.mean(coverages)), float(np.std(coverages))
    print(f"mean coverage {mean:.4f} (sd {spread:.4f})")
    standard_error = spread / math.sqrt(REPETITIONS)
    assert mean >= 1 - DELTA, (mean, standard_error)
    # Not trivially: the bound is nearly met (exact coverage 1 − 4/46 for continuous values),
    # α̂ varies with the calibration draw, and some repetitions cover less than 1 − δ.
    assert mean <= 1 - DELTA + 1 / (CALIBRATION_PROBLEMS + 1) + 3 * standard_error
    assert min(coverages) < 1 - DELTA < max(coverages)
    assert len(set(alphas)) > REPETITIONS / 2 and min(alphas) > 0


@pytest.mark.parametrize(("delta", "below_one"), [(0.05, True), (0.2, False)])
def test_at_alpha_hat_every_calibration_problem_at_or_above_the_kth_value_is_covered(
    delta: float, below_one: bool
) -> None:
    rng = np.random.default_rng(7)
    problems = [synthetic_problem(rng, i) for i in range(60)]
    result = calibration.calibrate(
        problems, delta, evaluator="llm", unit="candidate", runs=["synthetic"]
    )
    rule = result.rule
    for problem in problems:
        if problem.alpha_sup is not None and problem.alpha_sup >= rule.order_statistic:
            assert problem.holds_correct(rule.alpha), problem
        if problem.alpha_sup is None or problem.alpha_sup <= min(rule.alpha, 1 - 1e-9):
            assert not problem.holds_correct(rule.alpha), problem  # rank 1 is held at α = 1
    assert (rule.alpha < 1) == below_one
    assert result.empirical_coverage >= (rule.problems - rule.k + 1) / rule.problems
    assert result.mean_size == np.mean([p.size(rule.alpha) for p in problems])
    # the curve: the closed grid plus α̂, coverage falling and sizes shrinking with α
    assert [point.alpha for point in result.coverage_curve] == sorted(
        {*closed_alpha_grid(), rule.alpha}
    )
    coverages = [point.coverage for point in result.coverage_curve]
    assert coverages == sorted(coverages, reverse=True) and coverages[0] > coverages[-1]
    assert coverages[0] == 1 - rule.floor  # α = 0 holds every valid unit


def test_a_rank_one_order_statistic_gives_alpha_one_and_a_never_the_floor() -> None:
    ranked = CalibrationProblem("r", "a", (0.6, 0.4), 1, 1.0)
    second = CalibrationProblem("r", "b", (0.6, 0.4), 2, 0.4)
    never = CalibrationProblem("r", "c", (0.6, 0.4), None, None)
    result = calibration.calibrate(
        [ranked] * 19 + [never], 0.1, evaluator="generator", unit="answer", runs=["r"]
    )
    assert result.alpha == 1.0 and result.rule.k == 2
    assert result.empirical_coverage == 19 / 20 and result.mean_size == 1.0
    assert result.rule.floor == 1 / 20
    # the 2nd smallest is rank 2 below 0.4 of mass: α̂ just below 0.4, where rank 2 is held
    result = calibration.calibrate(
        [ranked] * 18 + [second, never], 0.1, evaluator="generator", unit="answer", runs=["r"]
    )
    assert result.alpha == 0.4 - 2 * MASS_TOLERANCE
    assert result.empirical_coverage == 19 / 20 and result.mean_size == 2.0
    assert second.holds_correct(result.alpha) and not second.holds_correct(0.4 - MASS_TOLERANCE)


# ---- the SQL gives the Python values -------------------------------------------------------


def synthetic_views(rng: random.Random) -> tuple[duckdb.DuckDBPyConnection, dict]:
    """unit_rankings and unit_outcomes as the contract describes them, and the expected
    conformity row of every ranking."""
    rankings, outcomes, expected = [], [], {}
    for run_id in ("r1", "r2"):
        for number in range(25):
            problem_id = f"p{number}"
            truth = None if rng.random() < 0.2 else 10.0
            for unit in ("candidate", "answer"):
                count = rng.randint(1, 8)
                units = [f"{unit[0]}{i}" for i in range(count)]
                weights = [rng.random() + 0.01 for _ in units]
                p = {u: w / sum(weights) for u, w in zip(units, weights, strict=True)}
                valid = {u: rng.random() > 0.15 for u in units}
                correct = {u: None if truth is None else rng.random() < 0.3 for u in units}
                for u in units:
                    outcomes.append(
                        {
                            "run_id": run_id,
                            "problem_id": problem_id,
                            "unit": unit,
                            "unit_id": u,
                            "valid": valid[u],
                            "objective_truth": truth,
                            "correct": correct[u],
                        }
                    )
                for evaluator in ("llm", "generator"):
                    order = sorted(units, key=lambda u: (not valid[u], rng.random()))
                    cumulative = 0.0
                    for rank, u in enumerate(order, start=1):
                        cumulative += p[u]
                        rankings.append(
                            {
                                "run_id": run_id,
                                "problem_id": problem_id,
                                "unit": unit,
                                "evaluator": evaluator,
                                "unit_id": u,
                                "candidate_id": u,
                                "rank": rank,
                                "p": p[u],
                                "valid": valid[u],
                                "ranking_score": None,
                                "cum_p": cumulative,
                            }
                        )
                    flags = [bool(correct[u]) for u in order]
                    first = next(
                        (r for r, u in enumerate(order, 1) if valid[u] and correct[u]), None
                    )
                    value = conformity_value(
                        [p[u] for u in order], [valid[u] for u in order], flags
                    )
                    expected[(run_id, problem_id, unit, evaluator)] = (
                        truth is not None,
                        first,
                        value,
                        tuple(p[u] for u in order if valid[u]),
                    )
    con = duckdb.connect()
    for name, rows in (("unit_rankings", rankings), ("unit_outcomes", outcomes)):
        con.register(f"_{name}", pa.Table.from_pylist(rows))
        con.execute(f"create table {name} as select * from _{name}")
    return con, expected


def test_conformity_scores_sql_equals_the_python_values() -> None:
    con, expected = synthetic_views(random.Random(3))
    rows = con.execute(calibration.CONFORMITY_SQL.read_text()).fetchall()
    assert len(rows) == len(expected)
    for run_id, problem_id, unit, evaluator, has_truth, first, mass, sup in rows:
        truth, want_first, want_sup, _ = expected[(run_id, problem_id, unit, evaluator)]
        assert (has_truth, first) == (truth, want_first)
        if want_sup is None:
            assert (mass, sup) == (None, None)
        else:
            assert sup == pytest.approx(want_sup, abs=1e-12)
            assert mass == pytest.approx(1 - want_sup, abs=1e-12)
    assert any(row[7] is None for row in rows if row[4]) and any(row[7] == 1.0 for row in rows)

    problems, skipped = calibration.read_problems(con, "generator", "answer")
    labelled = {k[:2] for k, v in expected.items() if k[2:] == ("answer", "generator") and v[0]}
    assert {(p.run_id, p.problem_id) for p in problems} == labelled
    assert skipped == 50 - len(labelled) > 0
    for problem in problems:
        _, first, _, ranked_p = expected[
            (problem.run_id, problem.problem_id, "answer", "generator")
        ]
        assert (problem.first_correct_rank, problem.ranked_p) == (first, pytest.approx(ranked_p))


# ---- storing, and a run that uses it -------------------------------------------------------


def stored_example(name: str | None = None, delta: float = 0.2) -> calibration.CalibrationRecord:
    rng = np.random.default_rng(1)
    problems = [synthetic_problem(rng, i) for i in range(30)]
    result = calibration.calibrate(
        problems, delta, evaluator="llm", unit="candidate", runs=["r2", "r1"], skipped=3
    )
    return calibration.record(result, name)


def test_calibrations_are_stored_replaced_listed_and_refused_by_name(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    with pytest.raises(InputError, match=r"'nope' is not in store .* \(calibrations there: none\)"):
        calibration.load_calibration(store, "nope")
    first = stored_example()
    assert first.name == stored_example().name and first.name.startswith("cal-")
    assert stored_example(delta=0.3).name != first.name
    calibration.save_calibration(store, first)
    assert calibration.load_calibration(store, first.name) == first
    replaced = stored_example(first.name, delta=0.3)
    calibration.save_calibration(store, replaced)
    assert calibration.load_calibration(store, first.name).delta == 0.3
    calibration.save_calibration(store, stored_example("mine"))
    with pytest.raises(InputError, match=f"calibrations there: {first.name}, mine"):
        calibration.load_calibration(store, "other")
    with pytest.raises(InputError, match="not allowed"):
        stored_example("../escape")
    assert first.settings["problems_without_ground_truth"] == 3 and first.runs == ("r2", "r1")


def test_the_calibrations_view(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    con = duckdb.connect()
    calibration.register_calibrations(con, store)
    assert con.execute("select count(*) from calibrations").fetchone() == (0,)
    assert "created_at" in con.sql("select * from calibrations").columns
    calibration.save_calibration(store, stored_example("a"))
    calibration.register_calibrations(con, store)
    calibration.save_calibration(store, stored_example("b", delta=0.3))  # read when queried
    rows = con.execute("select name, delta, runs from calibrations order by name").fetchall()
    assert rows == [("a", 0.2, ["r2", "r1"]), ("b", 0.3, ["r2", "r1"])]


def test_a_run_pins_its_calibration_and_assembles_with_alpha_hat(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    stored = stored_example("ops")
    calibration.save_calibration(store, stored)
    with pytest.raises(InputError, match=r"'missing' is not in store .* there: ops"):
        calibration.pin_run_calibration(store, "run-a", "missing")
    parameters = PortfolioRunParameters(store=str(store.root), run_id="run-a", calibration="ops")
    assert (
        parameters.fingerprint()
        != parameters.model_copy(update={"calibration": None}).fingerprint()
    )
    open_run(store, "run-a", parameters)
    assert calibration.pin_run_calibration(store, "run-a", "ops") == stored
    calibration.save_calibration(store, stored_example("ops", delta=0.3))  # replaced later
    assert calibration.run_calibration(store, "run-a") == stored  # the run keeps its copy
    settings = run_results.assembly_settings(store, "run-a")
    assert stored.alpha in settings.alphas
    assert (settings.calibrated_alpha, settings.calibrated_evaluator, settings.calibrated_unit) == (
        stored.alpha,
        "llm",
        "candidate",
    )
    open_run(store, "run-b", parameters.model_copy(update={"run_id": "run-b", "calibration": None}))
    assert calibration.run_calibration(store, "run-b") is None
    assert run_results.assembly_settings(store, "run-b").calibrated_alpha is None


# ---- the command ---------------------------------------------------------------------------


def optfolio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str]:
    """A synthetic finished run (3 problems with ground truth, 1 without) and one whose only
    problem has none."""
    root = tmp_path_factory.mktemp("calibration-store")
    store, run_id = build_finished_run(root)
    unlabelled = tuple(p for p in SYNTHETIC_PROBLEMS if p.objective_truth is None)
    build_finished_run(root, "unlabelled", unlabelled)
    return store, run_id


def test_calibrate_prints_and_stores_the_calibration(labelled_store: tuple[RunStore, str]) -> None:
    store, run_id = labelled_store
    done = optfolio(
        "calibrate", "--store", str(store.root), "--run", run_id, "--delta", "0.25", "--json"
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert {
        "alpha",
        "delta",
        "problems",
        "achievable_delta",
        "empirical_coverage",
        "mean_size",
        "floor",
        "name",
        "evaluator",
        "unit",
        "coverage_curve",
    } <= set(printed)
    # Under the LLM evaluator each labelled problem's best-ranked candidate is correct.
    assert (printed["alpha"], printed["problems"], printed["problems_without_ground_truth"]) == (
        1.0,
        3,
        1,
    )
    assert (printed["floor"], printed["achievable_delta"], printed["empirical_coverage"]) == (
        0.0,
        0.25,
        1.0,
    )
    assert printed["mean_size"] == 1.0 and printed["name"].startswith("cal-")
    assert calibration.load_calibration(store, printed["name"]).alpha == 1.0

    human = optfolio(
        "calibrate",
        "--store",
        str(store.root),
        "--run",
        run_id,
        "--delta",
        "0.25",
        "--name",
        "synthetic",
        "--unit",
        "answer",
    )
    assert human.returncode == 0, human.stderr
    # pooled, the wrong answer outscores the right one (71.25 < 72.5): α̂ below its mass
    assert "α̂ = 0.78337: holds a correct answer with probability ≥ 75%" in human.stdout
    assert "← α̂" in human.stdout and "optfolio run --calibration synthetic" in human.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--run", "nope"), "run 'nope' is not in store"),
        (("--run", "unlabelled"), "run 'unlabelled' has no problem with ground truth"),
        (("--run", "synthetic-run", "--delta", "0.1"), "smallest achievable δ is 0.25 (= 1/4)"),
        (("--run", "synthetic-run", "--unit", "sample"), "unit 'sample': use one of"),
        (("--run", "synthetic-run", "--evaluator", "judge"), "evaluator 'judge': use one of"),
        ((), "give at least one --run"),
    ],
)
def test_calibrate_refuses_in_one_line(
    labelled_store: tuple[RunStore, str], args: tuple[str, ...], message: str
) -> None:
    store, _ = labelled_store
    done = optfolio("calibrate", "--store", str(store.root), *args)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_run_refuses_a_missing_calibration_before_anything_starts(
    labelled_store: tuple[RunStore, str],
) -> None:
    store, _ = labelled_store
    runs = sorted((store.root / "runs").iterdir())
    done = optfolio("run", "--store", str(store.root), "--limit", "1", "--calibration", "absent")
    assert done.returncode == 2, done.stdout
    assert "calibration 'absent' is not in store" in done.stderr and "there: " in done.stderr
    assert done.stderr.count("\n") == 1
    assert sorted((store.root / "runs").iterdir()) == runs  # no run was opened
