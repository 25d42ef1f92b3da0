"""The DuckDB assembly (sql/) gives exactly the Python reference's rankings and portfolios."""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optfolio import warehouse
from optfolio.evaluators import EVALUATORS
from optfolio.portfolio import (
    PROBABILITY_METHODS,
    Candidate,
    coverage,
    portfolios,
    weights_from_logprobs,
)
from optfolio.schemas import CANDIDATES, SCORES
from optfolio.store import RunStore

RUN = "prop"

# Few distinct values so that ties in scores and probabilities are common.
log_probs = st.sampled_from([-0.1, -0.5, -0.5, -1.0, -2.0, -3.25])
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
    store.write_part("candidates", RUN, "all", pa.Table.from_pydict(candidate_rows, CANDIDATES))
    scores = pa.Table.from_pydict({f: score_rows.get(f, []) for f in SCORES.names}, SCORES)
    store.write_part("scores", RUN, "all", scores)
    return store


def reference(problems, alphas, seed, method) -> tuple[dict, dict]:
    """Portfolios and coverage per (problem, evaluator, α) from the Python reference."""
    members, coverages = {}, {}
    for number, rows in enumerate(problems):
        weights = weights_from_logprobs(
            [r["logprob_sum"] for r in rows],
            [r["logprob_mean"] for r in rows],
            [r["n_samples"] for r in rows],
            method,
        )
        candidates = [
            Candidate(r["candidate_id"], float(w), r["valid"], r["scores"], r["human_rank"])
            for r, w in zip(rows, weights, strict=True)
        ]
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
