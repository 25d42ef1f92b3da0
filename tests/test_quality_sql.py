"""Quality SQL (correctness, portfolio and random-draw quality, baselines) equals the Python
reference in optfolio/quality.py and optfolio/portfolio.py."""

from __future__ import annotations

import math
import random
import tempfile
from collections import defaultdict

import pandas as pd
import pyarrow as pa
import pytest

from optfolio import warehouse
from optfolio.evaluators import EVALUATORS
from optfolio.portfolio import (
    Candidate,
    portfolios,
    rank_by,
    weights_from_logprobs,
)
from optfolio.quality import (
    draw_order_key,
    is_correct,
    is_correct_orlm,
    majority_objective,
    pass_at_k,
    prefix_quality,
)
from optfolio.schemas import CANDIDATES, EXECUTIONS, JUDGMENTS, PROBLEMS, SCORES
from optfolio.store import RunStore

RUN = "q"
SEED = 5
DRAWS = 7
SIZES = (2, 4, 6, 8)
ALPHAS = [0.0, 0.1, 0.3, 0.5, 0.9, 1.0]


def table(schema: pa.Schema, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{f: row.get(f) for f in schema.names} for row in rows], schema)


def synthetic_run(rng: random.Random, problems: int) -> dict[str, list[dict]]:
    data: dict[str, list[dict]] = defaultdict(list)
    for number in range(problems):
        pid = f"p{number}"
        truth = rng.choice([None, 0.0, 12.0, -7.5, 1234.0, 0.4])
        data["problems"].append(
            {"problem_id": pid, "dataset": "t", "description": "d", "objective_truth": truth}
        )
        for index in range(rng.randint(1, 12)):
            cid = f"c{index}"
            valid = rng.random() > 0.15
            mean = rng.choice([-0.2, -0.5, -1.0])
            data["candidates"].append(
                {
                    "problem_id": pid,
                    "candidate_id": cid,
                    "n_samples": rng.randint(1, 3),
                    "valid": valid,
                    "token_count": 10,
                    "logprob_mean": mean,
                    "logprob_sum": mean * 10,
                }
            )
            objective = (
                rng.choice(
                    [
                        None,
                        truth,
                        (truth or 0) + 1e-9,
                        (truth or 0) * 1.03 + 0.2,
                        99.0,
                        float("nan"),
                    ]
                )
                if valid
                else None
            )
            data["executions"].append(
                {
                    "problem_id": pid,
                    "candidate_id": cid,
                    "status": "ok" if objective is not None else "error",
                    "objective": objective,
                }
            )
            for sample in range(2):
                data["scores"].append(
                    {
                        "problem_id": pid,
                        "candidate_id": cid,
                        "sample_index": sample,
                        "score": float(rng.randint(1, 5)),
                    }
                )
                if rng.random() > 0.1:
                    # an unparseable judge reply keeps a null score
                    score = None if rng.random() < 0.1 else rng.randint(1, 100)
                    data["judgments"].append(
                        {
                            "problem_id": pid,
                            "candidate_id": cid,
                            "sample_index": sample,
                            "score": None if score is None else float(score),
                            "normalized_score": None if score is None else (score - 1) / 99,
                        }
                    )
    return data


def python_quality(data: dict[str, list[dict]]) -> dict[tuple, dict]:
    expected: dict[tuple, dict] = {}
    for problem in data["problems"]:
        expected.update(problem_quality(problem, data))
    return expected


def problem_quality(problem: dict, data: dict[str, list[dict]]) -> dict[tuple, dict]:
    expected: dict[tuple, dict] = {}
    pid, truth = problem["problem_id"], problem["objective_truth"]
    rows = [c for c in data["candidates"] if c["problem_id"] == pid]
    objective = {
        e["candidate_id"]: e["objective"] for e in data["executions"] if e["problem_id"] == pid
    }
    judge: dict[str, list[float]] = defaultdict(list)
    for j in data["judgments"]:
        if j["problem_id"] == pid:
            judge[j["candidate_id"]].append(j["normalized_score"])
    # an unparseable judge reply has a null score: ignored, as SQL's avg ignores nulls
    judge_score = {
        c: sum(present) / len(present)
        for c, v in judge.items()
        if (present := [x for x in v if x is not None])
    }
    correct = {
        r["candidate_id"]: is_correct(objective[r["candidate_id"]], truth, r["valid"]) for r in rows
    }
    weights = weights_from_logprobs(
        [r["logprob_sum"] for r in rows],
        [r["logprob_mean"] for r in rows],
        [r["n_samples"] for r in rows],
    )
    scores: dict[str, list] = defaultdict(list)
    for s in data["scores"]:
        if s["problem_id"] == pid:
            scores[s["candidate_id"]].append(s["score"])
    candidates = [
        Candidate(r["candidate_id"], float(w), r["valid"], scores[r["candidate_id"]])
        for r, w in zip(rows, weights, strict=True)
    ]
    valid_ids = [c.candidate_id for c in candidates if c.valid]
    samples = sum(r["n_samples"] for r in rows)
    correct_samples = sum(r["n_samples"] for r in rows if correct[r["candidate_id"]])
    majority = majority_objective(
        [(objective[r["candidate_id"]], r["n_samples"]) for r in rows if r["valid"]], SEED
    )

    def random_quality(size: int) -> tuple[float | None, float | None]:
        mins, holds = [], []
        for draw in range(DRAWS):
            order = sorted(valid_ids, key=lambda c, d=draw: draw_order_key(SEED, d, c))[:size]
            q = prefix_quality([judge_score.get(c) for c in order], [correct[c] for c in order])
            mins.append(q.min_judge_score)
            holds.append(q.holds_correct)
        present = [m for m in mins if m is not None]
        known = [h for h in holds if h is not None]
        return (
            sum(present) / len(present) if present else None,
            sum(known) / len(known) if known else None,
        )

    def row(members: list[str], size: int) -> dict:
        q = prefix_quality([judge_score.get(c) for c in members], [correct[c] for c in members])
        random_min, random_holds = random_quality(size) if size else (None, None)
        return {
            "portfolio_min_judge": q.min_judge_score if members else None,
            "portfolio_holds_correct": q.holds_correct if members else None,
            "random_min_judge": random_min,
            "random_holds_correct": random_holds,
            "pass_at_1": None if truth is None else correct_samples / samples,
            "pass_at_size": None
            if truth is None or size > samples
            else pass_at_k(samples, correct_samples, size),
            "majority_vote_correct": None
            if truth is None
            else bool(majority is not None and is_correct(majority, truth)),
        }

    for evaluator in EVALUATORS:
        for portfolio in portfolios(candidates, ALPHAS, SEED, evaluator):
            expected[(pid, evaluator, "alpha", portfolio.alpha, portfolio.size)] = row(
                list(portfolio.members), portfolio.size
            )
        ranked = rank_by(evaluator, candidates, SEED)
        ranked_valid = [c.candidate_id for c in ranked if c.valid]
        for size in SIZES:
            if size <= len(ranked_valid):
                expected[(pid, evaluator, "size", None, size)] = row(ranked_valid[:size], size)
    return expected


def assert_quality_matches(frame: pd.DataFrame, expected: dict[tuple, dict]) -> None:
    """The ``quality`` view's rows equal the Python reference, row for row and column for column."""
    frame = frame.astype(object).where(frame.notna(), None)
    actual = {
        (r["problem_id"], r["evaluator"], r["basis"], r["alpha"], int(r["size"])): r
        for r in frame.to_dict("records")
    }
    assert actual.keys() == expected.keys()
    for key, want in expected.items():
        for column, value in want.items():
            assert close(actual[key][column], value), (key, column, actual[key][column], value)


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_quality_sql_equals_python(seed: int) -> None:
    data = synthetic_run(random.Random(seed), problems=12)
    expected = python_quality(data)
    schemas = {
        "problems": PROBLEMS,
        "candidates": CANDIDATES,
        "executions": EXECUTIONS,
        "scores": SCORES,
        "judgments": JUDGMENTS,
    }
    with tempfile.TemporaryDirectory() as root:
        store = RunStore(root)
        for name, schema in schemas.items():
            store.write_part(name, RUN, "all", table(schema, data[name]))
        config = warehouse.AssemblySettings(
            alphas=ALPHAS, tie_seed=SEED, sizes=SIZES, random_draws=DRAWS
        )
        with warehouse.connect(store, settings=config) as con:
            frame = con.sql("select * from quality").df()
            summary = con.sql("select * from dataset_summary").df()
    assert_quality_matches(frame, expected)
    assert set(summary["basis"]) == {"alpha", "size"}
    assert (summary["problems"] > 0).all()


@pytest.mark.parametrize(
    ("objective", "truth", "main", "orlm"),
    [
        (100.0, 100.0, True, True),
        (100.00005, 100.0, True, True),  # 5e-7 relative
        (100.001, 100.0, False, True),  # main rule strict, ORLM rounds
        (104.0, 100.0, False, True),
        (106.0, 100.0, False, False),
        (1e-7, 0.0, True, True),  # the absolute floor
        (0.4, 0.0, False, True),  # rounds to 0
        (None, 5.0, False, False),
        (float("nan"), 5.0, False, False),
        (5.0, None, None, None),
    ],
)
def test_correctness_rules(objective, truth, main, orlm) -> None:
    assert is_correct(objective, truth) is main
    assert is_correct_orlm(objective, truth) is orlm


def test_pass_at_k() -> None:
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong samples
