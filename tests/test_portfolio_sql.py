"""The DuckDB assembly (sql/) gives exactly the Python reference's rankings and portfolios."""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optfolio import warehouse
from optfolio.evaluators import DEFAULT_EVALUATOR, EVALUATORS
from optfolio.portfolio import (
    PROBABILITY_METHODS,
    Candidate,
    coverage,
    group_answers,
    portfolios,
    rank_units,
    representative,
    units,
    weights_from_logprobs,
)
from optfolio.schemas import CANDIDATES, EXECUTIONS, SCORES
from optfolio.store import RunStore

RUN = "prop"

# Few distinct values so that ties in scores and probabilities are common.
log_probs = st.sampled_from([-0.1, -0.5, -0.5, -1.0, -2.0, -3.25])
# Objectives that group into answers: equal, within 1e-6 relative (5e-7 apart chains), apart.
objectives = st.sampled_from([None, 60.0, 60.0, 60.00003, 60.00006, 3.0, -0.0, 0.0, 1e-7, 1234.5])
score_samples = st.lists(
    st.one_of(st.none(), st.integers(1, 100), st.sampled_from([50, 70])), max_size=4
)


@st.composite
def problem(draw: st.DrawFn) -> list[dict]:
    size = draw(st.integers(1, 10))
    ranks = draw(st.permutations(list(range(1, size + 1))))
    rows = []
    for index in range(size):
        mean = draw(log_probs)
        tokens = draw(st.integers(1, 40))
        rows.append(
            {
                "candidate_id": f"c{index}",
                "n_samples": draw(st.integers(1, 4)),
                "valid": draw(st.booleans()) or draw(st.booleans()),  # mostly valid
                "logprob_mean": mean,
                "logprob_sum": mean * tokens,
                "scores": draw(score_samples),
                "human_rank": ranks[index],
                "objective": draw(objectives),
            }
        )
    if draw(st.booleans()) and size > 1:  # an endpoint that returned no log-probs
        rows[0]["logprob_mean"] = rows[0]["logprob_sum"] = None
    return rows


alpha_grids = st.lists(
    st.sampled_from([i / 50 for i in range(51)]) | st.floats(0, 1),
    min_size=1,
    max_size=6,
    unique=True,
)


def write_store(root: str, problems: list[list[dict]]) -> RunStore:
    store = RunStore(root)
    candidate_rows: dict[str, list] = defaultdict(list)
    score_rows: dict[str, list] = defaultdict(list)
    for number, rows in enumerate(problems):
        for row in rows:
            for field in CANDIDATES.names:
                value = {"problem_id": f"p{number}", "token_count": 1}.get(field, row.get(field))
                candidate_rows[field].append(value)
            for index, score in enumerate(row["scores"]):
                score_rows["problem_id"].append(f"p{number}")
                score_rows["candidate_id"].append(row["candidate_id"])
                score_rows["sample_index"].append(index)
                score_rows["score"].append(None if score is None else float(score))
                score_rows["raw_text"].append(None)
                score_rows["model"].append("test")
                score_rows["reasked"].append(False)
    store.write_part("candidates", RUN, "all", pa.Table.from_pydict(candidate_rows, CANDIDATES))
    executions = [
        {
            "problem_id": f"p{number}",
            "candidate_id": row["candidate_id"],
            "status": "error" if row.get("objective") is None else "ok",
            "objective": row.get("objective"),
        }
        for number, rows in enumerate(problems)
        for row in rows
        if row["valid"]
    ]
    store.write_part(
        "executions",
        RUN,
        "all",
        pa.Table.from_pylist(
            [{f: e.get(f) for f in EXECUTIONS.names} for e in executions], EXECUTIONS
        ),
    )
    scores = pa.Table.from_pydict({f: score_rows.get(f, []) for f in SCORES.names}, SCORES)
    store.write_part("scores", RUN, "all", scores)
    return store


def problem_candidates(rows: list[dict], method) -> list[Candidate]:
    weights = weights_from_logprobs(
        [r["logprob_sum"] for r in rows],
        [r["logprob_mean"] for r in rows],
        [r["n_samples"] for r in rows],
        method,
    )
    return [
        Candidate(
            r["candidate_id"],
            float(w),
            r["valid"],
            r["scores"],
            r["human_rank"],
            objective=r.get("objective") if r["valid"] else None,
        )
        for r, w in zip(rows, weights, strict=True)
    ]


def answer_reference(problems, alphas, seed, method) -> tuple[dict, dict]:
    """Answer-level portfolios per (problem, evaluator, α), and the ``answers`` rows."""
    members, answers = {}, {}
    for number, rows in enumerate(problems):
        candidates = problem_candidates(rows, method)
        samples = {r["candidate_id"]: r["n_samples"] for r in rows}
        _, probabilities = units(candidates, "answer")
        ranked = rank_units(candidates, units(candidates)[1], seed, DEFAULT_EVALUATOR)
        for answer in group_answers(candidates):
            answers[(f"p{number}", answer.answer_id)] = (
                probabilities[answer.answer_id],
                len(answer.members),
                sum(samples[m.candidate_id] for m in answer.members),
                answer.objective,
                representative(answer, ranked),
            )
        for evaluator in EVALUATORS:
            for portfolio in portfolios(candidates, alphas, seed, evaluator, "answer"):
                members[(f"p{number}", evaluator, portfolio.alpha)] = list(portfolio.members)
    return members, answers


def reference(problems, alphas, seed, method) -> tuple[dict, dict]:
    """Portfolios and coverage per (problem, evaluator, α) from the Python reference."""
    members, coverages = {}, {}
    for number, rows in enumerate(problems):
        candidates = problem_candidates(rows, method)
        human = {c.candidate_id: c.human_rank for c in candidates}
        for evaluator in EVALUATORS:
            for portfolio in portfolios(candidates, alphas, seed, evaluator):
                key = (f"p{number}", evaluator, portfolio.alpha)
                members[key] = list(portfolio.members)
                coverages[key] = (portfolio.size, coverage(portfolio.members, human))
    return members, coverages


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    problems=st.lists(problem(), min_size=1, max_size=4),
    alphas=alpha_grids,
    seed=st.integers(0, 2**31),
    method=st.sampled_from(PROBABILITY_METHODS),
)
def test_sql_portfolios_equal_the_python_reference(problems, alphas, seed, method) -> None:
    expected_members, expected_coverage = reference(problems, alphas, seed, method)
    with tempfile.TemporaryDirectory() as root:
        store = write_store(root, problems)
        config = warehouse.AssemblySettings(alphas=alphas, tie_seed=seed, p_method=method)
        with warehouse.connect(store, settings=config) as con:
            portfolio_rows = con.sql(
                "select problem_id, evaluator, alpha, candidate_id from portfolios"
                " order by problem_id, evaluator, alpha, rank"
            ).fetchall()
            coverage_rows = con.sql(
                "select problem_id, evaluator, alpha, portfolio_size, coverage"
                " from portfolio_coverage"
            ).fetchall()
    actual_members: dict = defaultdict(list)
    for problem_id, evaluator, alpha, candidate_id in portfolio_rows:
        actual_members[(problem_id, evaluator, alpha)].append(candidate_id)
    nonempty = {key: value for key, value in expected_members.items() if value}
    assert dict(actual_members) == nonempty
    actual_coverage = {(p, e, a): (size, c) for p, e, a, size, c in coverage_rows}
    assert actual_coverage.keys() == expected_coverage.keys()
    for key, (size, value) in expected_coverage.items():
        assert actual_coverage[key][0] == size, key
        if value is None:
            assert actual_coverage[key][1] is None, key
        else:
            assert math.isclose(actual_coverage[key][1], value, abs_tol=1e-12), key


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    problems=st.lists(problem(), min_size=1, max_size=4),
    alphas=alpha_grids,
    seed=st.integers(0, 2**31),
    method=st.sampled_from(PROBABILITY_METHODS),
)
def test_sql_answer_portfolios_equal_the_python_reference(problems, alphas, seed, method) -> None:
    expected_members, expected_answers = answer_reference(problems, alphas, seed, method)
    with tempfile.TemporaryDirectory() as root:
        store = write_store(root, problems)
        config = warehouse.AssemblySettings(alphas=alphas, tie_seed=seed, p_method=method)
        with warehouse.connect(store, settings=config) as con:
            portfolio_rows = con.sql(
                "select problem_id, evaluator, alpha, answer_id from answer_portfolios"
                " order by problem_id, evaluator, alpha, rank"
            ).fetchall()
            answer_rows = con.sql(
                "select problem_id, answer_id, p, n_candidates, n_samples, objective,"
                " representative_candidate_id from answers"
            ).fetchall()
    actual_members: dict = defaultdict(list)
    for problem_id, evaluator, alpha, answer_id in portfolio_rows:
        actual_members[(problem_id, evaluator, alpha)].append(answer_id)
    assert dict(actual_members) == {key: value for key, value in expected_members.items() if value}
    actual_answers = {(row[0], row[1]): row[2:] for row in answer_rows}
    assert actual_answers.keys() == expected_answers.keys()
    for key, (p, n_candidates, n_samples, objective, representative_id) in expected_answers.items():
        got = actual_answers[key]
        assert math.isclose(got[0], p, rel_tol=1e-12), key
        assert got[1:3] == (n_candidates, n_samples), key
        assert got[3] == objective or (got[3] is None and objective is None), key
        assert got[4] == representative_id, key


def test_answers_group_equal_objectives_and_weigh_each_sample() -> None:
    """Three texts compute 60 (one of them sampled twice), one computes 3, one failed: three
    answers; the 60 answer carries 4 of the 6 samples' mass under frequency."""
    rows = [
        {"candidate_id": "c0", "n_samples": 2, "objective": 60.0},
        {"candidate_id": "c1", "n_samples": 1, "objective": 60.00003},
        {"candidate_id": "c2", "n_samples": 1, "objective": 60.0},
        {"candidate_id": "c3", "n_samples": 1, "objective": 3.0},
        {"candidate_id": "c4", "n_samples": 1, "objective": None},
    ]
    for row in rows:
        row |= {"valid": True, "logprob_mean": None, "logprob_sum": None, "scores": [50]}
        row["human_rank"] = 1
    with tempfile.TemporaryDirectory() as root:
        store = write_store(root, [rows])
        config = warehouse.AssemblySettings(alphas=[0.0], p_method="frequency")
        with warehouse.connect(store, settings=config) as con:
            answers = con.sql(
                "select answer_id, p, n_candidates, n_samples, candidate_ids from answers"
                " order by answer_id"
            ).fetchall()
            used = con.sql("select distinct p_method_used from candidates").fetchall()
    rounded = [(a, round(p, 12), n, s, c) for a, p, n, s, c in answers]
    assert rounded == [
        ("answer-c0", round(4 / 6, 12), 3, 4, ["c0", "c1", "c2"]),
        ("answer-c3", round(1 / 6, 12), 1, 1, ["c3"]),
        ("answer-c4", round(1 / 6, 12), 1, 1, ["c4"]),
    ]
    assert used == [("frequency",)]


def test_sql_rankings_break_ties_like_python() -> None:
    rows = [
        {
            "candidate_id": f"c{i}",
            "n_samples": 1,
            "valid": True,
            "logprob_mean": -1.0,
            "logprob_sum": -1.0,
            "scores": [60],
            "human_rank": i + 1,
        }
        for i in range(6)
    ]
    expected, _ = reference([rows], [0.0], seed=11, method="length_normalized")
    with tempfile.TemporaryDirectory() as root:
        store = write_store(root, [rows])
        config = warehouse.AssemblySettings(alphas=[0.0], tie_seed=11)
        with warehouse.connect(store, settings=config) as con:
            ranked = [
                r[0]
                for r in con.sql(
                    "select candidate_id from rankings where evaluator = 'llm' order by rank"
                ).fetchall()
            ]
    assert ranked == expected[("p0", "llm", 0.0)]
    assert ranked != sorted(ranked), "a hash tie-break should not look like id order"
