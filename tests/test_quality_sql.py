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
    UNITS,
    Candidate,
    group_answers,
    portfolios,
    rank_units,
    units,
    weights_from_logprobs,
)
from optfolio.quality import (
    INVALID_SAMPLE_JUDGE_SCORE,
    draw_order_key,
    is_correct,
    is_correct_orlm,
    majority_objective,
    pass_at_k,
    prefix_quality,
    sample_draw_key,
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
    status = {e["candidate_id"]: e["status"] for e in data["executions"] if e["problem_id"] == pid}
    judge: dict[str, list[float | None]] = defaultdict(list)
    for j in data["judgments"]:
        if j["problem_id"] == pid:
            judge[j["candidate_id"]].append(j["normalized_score"])
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
        Candidate(
            r["candidate_id"],
            float(w),
            r["valid"],
            scores[r["candidate_id"]],
            objective=objective[r["candidate_id"]] if status[r["candidate_id"]] == "ok" else None,
        )
        for r, w in zip(rows, weights, strict=True)
    ]
    members = {
        "candidate": {c.candidate_id: [c.candidate_id] for c in candidates},
        "answer": {
            a.answer_id: [m.candidate_id for m in a.members] for a in group_answers(candidates)
        },
    }
    samples = sum(r["n_samples"] for r in rows)
    correct_samples = sum(r["n_samples"] for r in rows if correct[r["candidate_id"]])
    majority = majority_objective(
        [(objective[r["candidate_id"]], r["n_samples"]) for r in rows if r["valid"]], SEED
    )

    def mean_of_draws(qualities: list) -> tuple[float | None, float | None]:
        present = [q.min_judge_score for q in qualities if q.min_judge_score is not None]
        known = [q.holds_correct for q in qualities if q.holds_correct is not None]
        return (
            sum(present) / len(present) if present else None,
            sum(known) / len(known) if known else None,
        )

    # the raw samples: a text sampled n times is n samples; ⊥ scores 0
    raw_samples = [(r["candidate_id"], copy) for r in rows for copy in range(r["n_samples"])]
    valid = {r["candidate_id"]: r["valid"] for r in rows}

    def sample_quality(size: int) -> tuple[float | None, float | None]:
        if size > len(raw_samples):
            return None, None
        qualities = []
        for draw in range(DRAWS):
            drawn = sorted(raw_samples, key=lambda s, d=draw: sample_draw_key(SEED, d, *s))[:size]
            qualities.append(
                prefix_quality(
                    [
                        unit_judge["candidate"].get(c) if valid[c] else INVALID_SAMPLE_JUDGE_SCORE
                        for c, _ in drawn
                    ],
                    [correct[c] for c, _ in drawn],
                )
            )
        return mean_of_draws(qualities)

    def pooled_mean(values: list[float | None]) -> float | None:
        # an unparseable judge reply has a null score: ignored, as SQL's avg ignores nulls
        present = [v for v in values if v is not None]
        return sum(present) / len(present) if present else None

    unit_judge = {
        unit: {
            uid: pooled_mean([x for c in cids for x in judge.get(c, [])])
            for uid, cids in by_unit.items()
        }
        for unit, by_unit in members.items()
    }
    unit_correct = {
        unit: {
            uid: None if truth is None else any(correct[c] for c in cids)
            for uid, cids in by_unit.items()
        }
        for unit, by_unit in members.items()
    }

    for unit in UNITS:
        ranked_units, probabilities = units(candidates, unit)
        valid_ids = [u.candidate_id for u in ranked_units if u.valid]
        judge_of, correct_of = unit_judge[unit], unit_correct[unit]

        def random_quality(
            size: int, valid_ids=valid_ids, judge_of=judge_of, correct_of=correct_of
        ):
            qualities = []
            for draw in range(DRAWS):
                order = sorted(valid_ids, key=lambda c, d=draw: draw_order_key(SEED, d, c))[:size]
                qualities.append(
                    prefix_quality([judge_of.get(c) for c in order], [correct_of[c] for c in order])
                )
            return mean_of_draws(qualities)

        def row(
            chosen: list[str],
            size: int,
            judge_of=judge_of,
            correct_of=correct_of,
            random_quality=random_quality,
        ) -> dict:
            q = prefix_quality([judge_of.get(c) for c in chosen], [correct_of[c] for c in chosen])
            random_min, random_holds = random_quality(size) if size else (None, None)
            sample_min, sample_holds = sample_quality(size) if size else (None, None)
            return {
                "portfolio_min_judge": q.min_judge_score if chosen else None,
                "portfolio_holds_correct": q.holds_correct if chosen else None,
                "random_min_judge": random_min,
                "random_holds_correct": random_holds,
                "sample_min_judge": sample_min,
                "sample_holds_correct": sample_holds,
                "pass_at_1": None if truth is None else correct_samples / samples,
                "pass_at_size": None
                if truth is None or size > samples
                else pass_at_k(samples, correct_samples, size),
                "majority_vote_correct": None
                if truth is None
                else bool(majority is not None and is_correct(majority, truth)),
                "calibrated": False,
            }

        for evaluator in EVALUATORS:
            for portfolio in portfolios(candidates, ALPHAS, SEED, evaluator, unit):
                key = (pid, unit, evaluator, "alpha", portfolio.alpha, portfolio.size)
                expected[key] = row(list(portfolio.members), portfolio.size)
            ranked = rank_units(ranked_units, probabilities, SEED, evaluator)
            ranked_valid = [u.candidate_id for u in ranked if u.valid]
            for size in SIZES:
                if size <= len(ranked_valid):
                    expected[(pid, unit, evaluator, "size", None, size)] = row(
                        ranked_valid[:size], size
                    )
    return expected


def assert_quality_matches(frame: pd.DataFrame, expected: dict[tuple, dict]) -> None:
    """The ``quality`` view's rows equal the Python reference, row for row and column for column."""
    frame = frame.astype(object).where(frame.notna(), None)
    actual = {
        (r["problem_id"], r["unit"], r["evaluator"], r["basis"], r["alpha"], int(r["size"])): r
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
