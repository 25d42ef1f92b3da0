"""Registries for what grows: every registered evaluator kind (``optfolio.evaluators``) and
dataset kind (``optfolio.datasets.KINDS``) is handled by each consumer (the SQL, the Python
reference, figures, review, report, CLI, run parameters), so adding one is a registry entry
plus its own code; a kind no consumer can rank or read is refused loudly, never dropped or
ranked as ties."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from matplotlib.colors import is_color_like
from matplotlib.pyplot import close

from optfolio import datasets, run_results, warehouse
from optfolio.datasets import KINDS, DatasetKind, load_problems
from optfolio.errors import InputError
from optfolio.evaluators import (
    DEFAULT_EVALUATOR,
    EVALUATORS,
    Evaluator,
    EvaluatorKind,
    evaluator_help,
)
from optfolio.portfolio import (
    RANKING_SOURCES,
    Candidate,
    portfolios,
    rank_by,
    weights_from_logprobs,
)
from optfolio.report import render_report
from optfolio.review import load_reviews
from optfolio.run_config import PortfolioRunParameters
from optfolio.schemas import CANDIDATES, SCORES
from optfolio.store import RunStore
from tests.plugins.run_fixtures import build_finished_run

RUN = "kinds"
SEED = 3

# ---- evaluator kinds -------------------------------------------------------------------------


def test_types_labels_and_colours_follow_the_evaluator_registry() -> None:
    assert typing.get_args(Evaluator) == tuple(EVALUATORS)
    assert DEFAULT_EVALUATOR in EVALUATORS
    kinds = list(EVALUATORS.values())
    assert [kind.name for kind in kinds] == list(EVALUATORS)
    assert len({kind.label for kind in kinds}) == len(kinds)  # figures tell them apart
    assert len({kind.color for kind in kinds}) == len(kinds)
    assert all(kind.label and kind.help and is_color_like(kind.color) for kind in kinds)
    assert all(f"{kind.name} ({kind.help})" in evaluator_help() for kind in kinds)


def test_every_registered_ranking_source_has_a_python_reference() -> None:
    assert {kind.ranked_by for kind in EVALUATORS.values()} <= set(RANKING_SOURCES)


def test_evaluators_table_holds_the_registry() -> None:
    table = warehouse.evaluators_table()
    assert table.column("evaluator").to_pylist() == list(EVALUATORS)
    assert table.column("ranked_by").to_pylist() == [k.ranked_by for k in EVALUATORS.values()]


# Distinct scores and probabilities, a missing score and a ⊥: every ranking rule is exercised.
ROWS = [
    # candidate, valid, mean log-prob, evaluator score samples
    ("a", True, -0.5, [40.0, 60.0]),
    ("b", True, -0.1, [90.0]),
    ("c", True, -2.0, []),  # never scored
    ("d", False, -0.2, []),  # ⊥
    ("e", True, -1.0, [70.0, None]),
]


def candidates() -> list[Candidate]:
    weights = weights_from_logprobs([m for _, _, m, _ in ROWS], [m for _, _, m, _ in ROWS], [1] * 5)
    return [
        Candidate(cid, float(w), valid, scores)
        for (cid, valid, _, scores), w in zip(ROWS, weights, strict=True)
    ]


def write_store(root: Path) -> RunStore:
    store = RunStore(root)
    candidate_rows = [
        {
            "problem_id": "p",
            "candidate_id": cid,
            "n_samples": 1,
            "valid": valid,
            "logprob_mean": mean,
            "logprob_sum": mean,
            "token_count": 1,
        }
        for cid, valid, mean, _ in ROWS
    ]
    score_rows = [
        {"problem_id": "p", "candidate_id": cid, "sample_index": i, "score": s, "model": "t"}
        for cid, _, _, scores in ROWS
        for i, s in enumerate(scores)
    ]

    def table(schema: pa.Schema, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist([{f: r.get(f) for f in schema.names} for r in rows], schema)

    store.write_part("candidates", RUN, "all", table(CANDIDATES, candidate_rows))
    store.write_part("scores", RUN, "all", table(SCORES, score_rows))
    return store


def sql_rankings(store: RunStore) -> dict[str, list[tuple[str, float | None]]]:
    settings = warehouse.AssemblySettings(alphas=[0.5], tie_seed=SEED)
    with warehouse.connect(store, settings=settings) as con:
        rows = con.sql(
            "select evaluator, candidate_id, ranking_score from rankings order by evaluator, rank"
        ).fetchall()
    ranked: dict[str, list[tuple[str, float | None]]] = {}
    for evaluator, candidate_id, score in rows:
        ranked.setdefault(evaluator, []).append((candidate_id, score))
    return ranked


def test_sql_ranks_by_every_python_ranking_source(monkeypatch, tmp_path: Path) -> None:
    """A kind per ranking source the Python reference knows: the SQL ranks each the same."""
    for source in RANKING_SOURCES:
        kind = EvaluatorKind(f"via-{source}", f"via {source}", source, "black", source)
        monkeypatch.setitem(EVALUATORS, kind.name, kind)
    ranked = sql_rankings(write_store(tmp_path))
    assert set(ranked) == set(EVALUATORS)
    for evaluator, rows in ranked.items():
        expected = rank_by(evaluator, candidates(), SEED)
        assert [cid for cid, _ in rows] == [c.candidate_id for c in expected], evaluator
        scores = RANKING_SOURCES[EVALUATORS[evaluator].ranked_by](candidates())
        for cid, score in rows:
            if scores[cid] is None:
                assert score is None, (evaluator, cid)
            else:
                assert math.isclose(score, scores[cid], rel_tol=1e-12), (evaluator, cid)


def test_a_kind_without_a_ranking_source_is_refused_loudly(monkeypatch, tmp_path: Path) -> None:
    store = write_store(tmp_path)
    oracle = EvaluatorKind("oracle", "oracle", "human_rank", "black", "the human ranking")
    monkeypatch.setitem(EVALUATORS, oracle.name, oracle)
    with pytest.raises(duckdb.Error, match="evaluator oracle: no ranking source human_rank"):
        sql_rankings(store)
    with pytest.raises(InputError, match="evaluator 'oracle': no ranking source 'human_rank'"):
        portfolios(candidates(), [0.5], SEED, "oracle")
    with pytest.raises(InputError, match="evaluator 'oracle': no ranking source"):
        portfolios([], [0.5], SEED, "oracle")


def test_an_unregistered_kind_is_refused_naming_the_registered_ones() -> None:
    with pytest.raises(InputError, match=f"evaluator 'human': use one of {', '.join(EVALUATORS)}"):
        portfolios(candidates(), [0.5], SEED, "human")


def test_a_new_kind_is_one_registry_entry(monkeypatch, tmp_path: Path) -> None:
    """Register a kind ranked by an existing source: SQL, the Python reference, figures,
    review, report and CLI all handle it without another edit."""
    import cli.report

    dummy = EvaluatorKind("dummy", "dummy evaluator", "p", "tab:purple", "p once more")
    monkeypatch.setitem(EVALUATORS, dummy.name, dummy)
    store, run_id = build_finished_run(tmp_path / "store", "dummy-run")
    # SQL: the same ranking as the kind with the same source, in every view
    with run_results.connect_run(store, run_id) as con:
        ranks = run_results.query(
            con, "select evaluator, problem_id, candidate_id, rank from rankings order by all"
        )
        summary = run_results.summary_table(con, [0.5])
        fixed_size = run_results.fixed_size_min_judge(con)
    by_kind = {
        k: g.drop(columns="evaluator").values.tolist() for k, g in ranks.groupby("evaluator")
    }
    assert set(by_kind) == set(EVALUATORS)
    assert by_kind["dummy"] == by_kind["generator"]
    assert list(dict.fromkeys(summary["evaluator"])) == list(EVALUATORS)  # registry order
    assert set(fixed_size["evaluator"].dropna()) == set(EVALUATORS)
    # the Python reference
    assert portfolios(candidates(), [0.1, 0.5], SEED, "dummy") == portfolios(
        candidates(), [0.1, 0.5], SEED, "generator"
    )
    # figures: a row of Fig. 5 and a line per kind, labelled
    drawn = run_results.plot_run_figures(store, run_id)
    fig5 = drawn["fig5_min_judge_kde"]
    titles = [axis.get_title() for axis in fig5.axes]
    assert len(fig5.axes) % len(EVALUATORS) == 0
    assert all(any(kind.label in title for title in titles) for kind in EVALUATORS.values())
    sweep = drawn["size_and_coverage_vs_confidence"].axes[0]
    legend = [text.get_text() for text in sweep.get_legend().get_texts()]
    assert all(any(kind.label in entry for entry in legend) for kind in EVALUATORS.values())
    for figure in drawn.values():
        close(figure)
    # review and report
    reviews = load_reviews(store, run_id, 0.5, "dummy")
    generator_reviews = load_reviews(store, run_id, 0.5, "generator")
    assert [r.member_ids for r in reviews] == [r.member_ids for r in generator_reviews]
    page, _ = render_report(store, run_id, 0.5, "dummy")
    assert "dummy evaluator" in page
    # the CLI: the option's help names every kind, the command accepts the new one
    hints = typing.get_type_hints(cli.report.report_command, include_extras=True)
    registered_at_import = [name for name in EVALUATORS if name != dummy.name]
    assert all(name in hints["evaluator"].__metadata__[0].help for name in registered_at_import)
    out = tmp_path / "page.html"
    cli.report.report_command(run_id, out, store.root, 0.5, "dummy")
    assert "dummy evaluator" in out.read_text()


# ---- dataset kinds ---------------------------------------------------------------------------


def test_run_parameters_and_docs_follow_the_dataset_registry() -> None:
    assert typing.get_args(DatasetKind) == tuple(KINDS)
    schema = PortfolioRunParameters.model_json_schema()
    assert schema["properties"]["dataset"]["enum"] == list(KINDS)
    for kind in KINDS:
        assert PortfolioRunParameters(dataset=kind).dataset == kind
        assert callable(KINDS[kind])
        assert f"``{kind}``" in (datasets.__doc__ or ""), f"{kind} is not described"
    with pytest.raises(ValueError, match="dataset"):
        PortfolioRunParameters(dataset="csv")


def test_a_new_dataset_kind_is_its_reader(monkeypatch, tmp_path: Path) -> None:
    from optfolio.datasets.readers import ProblemRecord

    def read_one(path: Path, kind: str, errors) -> list[ProblemRecord]:
        return [ProblemRecord("1", f"{kind}-1", "Maximize x.", 1.0, None, f"{path}#1", "#1")]

    monkeypatch.setitem(KINDS, "toy", read_one)
    table = load_problems("toy", tmp_path)
    assert table.to_pylist()[0] | {"source": None} == {
        "problem_id": "toy-1",
        "dataset": "toy",
        "description": "Maximize x.",
        "objective_truth": 1.0,
        "solution_truth": None,
        "source": None,
    }
