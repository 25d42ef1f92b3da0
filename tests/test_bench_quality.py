"""``bench/quality.py`` reading a finished synthetic run (tests/plugins/run_fixtures.py: no LLM,
no Docker): the figures it prints are the run's SQL views, and its calibration uses the
smallest achievable δ when the half is too small for the one asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optfolio import run_results, warehouse
from optfolio.store import RunStore

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "quality.py"
LABELLED = {"furniture", "diet", "shipping"}  # open-ended has no ground truth

HALF_QUALITY = """
select
    count(*) as problems,
    avg(size) as mean_size,
    avg(portfolio_holds_correct::double) as holds_correct,
    avg(random_holds_correct) as random_holds_correct,
    avg(sample_holds_correct) as sample_holds_correct,
    avg(portfolio_min_judge) as min_judge
from quality
where basis = 'alpha' and evaluator = ? and unit = ? and alpha = ?
    and list_contains(?, problem_id)
"""


@pytest.fixture(scope="module")
def printed(synthetic_finished_run: tuple[RunStore, str]) -> dict:
    store, run_id = synthetic_finished_run
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--store", str(store.root), "--run", run_id, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def group(printed: dict, evaluator: str, unit: str) -> dict:
    return next(g for g in printed["groups"] if (g["evaluator"], g["unit"]) == (evaluator, unit))


def test_the_alpha_rows_are_the_fixtures_portfolios(printed: dict) -> None:
    assert printed["labelled"] == 3 and printed["problems"] == 4
    llm = group(printed, "llm", "candidate")
    at = {row["alpha"]: row for row in llm["alphas"]}
    # The fixture's design: best, wrong, also_right at α = 0.5 (best and also_right correct);
    # best alone at α = 0.98; 2 of 5 samples correct; the majority objective is the truth.
    assert at[0.5]["mean_size"] == 3 and at[0.5]["holds_correct"] == 1.0
    assert at[0.98]["mean_size"] == 1 and at[0.98]["min_judge"] == pytest.approx(0.95)
    assert llm["pass_at_1"] == pytest.approx(0.4) and llm["majority_vote"] == 1.0


def test_the_calibrated_rows_are_the_quality_view_at_alpha_hat(
    printed: dict, synthetic_finished_run: tuple[RunStore, str]
) -> None:
    store, run_id = synthetic_finished_run
    halves = printed["halves"]
    assert sorted(halves["A"] + halves["B"]) == sorted(LABELLED)
    assert (len(halves["A"]), len(halves["B"])) == (2, 1)
    checked = 0
    for unit in ("candidate", "answer"):
        for cal in group(printed, "llm", unit)["calibrated"]:
            # δ = 0.1 needs 9 problems: the smallest achievable, 1/(n + 1) (none is "never")
            assert cal["never"] == 0
            assert cal["delta"] == pytest.approx(1 / (cal["calibration_problems"] + 1))
            alpha_hat, measured = cal["alpha_hat"], cal["measured"]
            settings = run_results.assembly_settings(store, run_id, [alpha_hat])
            with warehouse.connect(store, [run_id], settings) as con:
                frame = con.execute(
                    HALF_QUALITY, ["llm", unit, alpha_hat, halves[cal["measured_on"]]]
                ).df()
            want = frame.iloc[0].to_dict()
            for column, value in want.items():
                assert measured[column] == pytest.approx(value), (unit, cal, column)
            checked += 1
    assert checked == 4
