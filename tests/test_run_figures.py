"""A run's figures (paper Fig. 5 and the α sweeps): drawn from a finished store, and the
numbers behind them equal a recomputation in plain Python from the stage tables."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optfolio import figures, run_results
from optfolio.evaluators import EVALUATORS
from optfolio.quality import draw_order_key, is_correct
from optfolio.store import RunStore
from tests.plugins.run_fixtures import build_finished_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def stage_rows(store: RunStore, run_id: str) -> dict[str, list[dict]]:
    return {
        table: store.read(table, [run_id]).to_pylist()
        for table in ("problems", "candidates", "executions", "scores", "judgments")
    }


class PlainRun:
    """The run recomputed without SQL: p, rankings, judge scores, correctness per problem."""

    def __init__(self, rows: dict[str, list[dict]], seed: int = 0) -> None:
        self.seed = seed
        self.truth = {p["problem_id"]: p["objective_truth"] for p in rows["problems"]}
        objective = {e["candidate_id"]: e["objective"] for e in rows["executions"]}
        judge: dict[str, list[float]] = defaultdict(list)
        for j in rows["judgments"]:
            if j["normalized_score"] is not None:
                judge[j["candidate_id"]].append(j["normalized_score"])
        self.judge = {c: sum(v) / len(v) for c, v in judge.items()}
        evaluator: dict[str, list[float]] = defaultdict(list)
        for s in rows["scores"]:
            evaluator[s["candidate_id"]].append(s["score"])
        self.candidates: dict[str, list[dict]] = defaultdict(list)
        for c in rows["candidates"]:
            self.candidates[c["problem_id"]].append(c)
        self.p: dict[str, float] = {}
        for problem_candidates in self.candidates.values():
            # length-normalized: exp of the mean token log-prob, normalized over the problem
            weights = {c["candidate_id"]: math.exp(c["logprob_mean"]) for c in problem_candidates}
            total = sum(weights.values())
            self.p |= {cid: w / total for cid, w in weights.items()}
        self.correct = {
            c["candidate_id"]: is_correct(
                objective.get(c["candidate_id"]), self.truth[c["problem_id"]], c["valid"]
            )
            for c in rows["candidates"]
        }
        self.mean_score = {c: sum(v) / len(v) for c, v in evaluator.items()}

    def ranking(self, problem_id: str, evaluator: str) -> list[str]:
        valid = [c["candidate_id"] for c in self.candidates[problem_id] if c["valid"]]
        # each ranking source recomputed here (optfolio.evaluators: what a kind ranks by)
        key = {"mean_score": self.mean_score, "p": self.p}[EVALUATORS[evaluator].ranked_by]
        # the fixture's scores and probabilities are distinct: no tie to break
        return sorted(valid, key=lambda c: -key[c])

    def random_subset(self, problem_id: str, draw: int, size: int) -> list[str]:
        valid = [c["candidate_id"] for c in self.candidates[problem_id] if c["valid"]]
        return sorted(valid, key=lambda c: draw_order_key(self.seed, draw, c))[:size]

    def portfolio(self, problem_id: str, evaluator: str, alpha: float) -> list[str]:
        members, mass = [], 0.0
        for candidate in self.ranking(problem_id, evaluator):
            members.append(candidate)
            mass += self.p[candidate]
            if mass >= 1 - alpha - 1e-6:
                break
        return members


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[RunStore, str, PlainRun]:
    # Its own copy: the figures task writes into the store.
    store, run_id = build_finished_run(tmp_path_factory.mktemp("figures-store"))
    return store, run_id, PlainRun(stage_rows(store, run_id))


@pytest.fixture(scope="module")
def figure_data(finished) -> dict[str, pd.DataFrame]:
    store, run_id, _ = finished
    with run_results.connect_run(store, run_id) as con:
        return {
            "fixed_size": run_results.fixed_size_min_judge(con),
            "coverage": run_results.correct_coverage(con),
            "summary": run_results.summary_by_alpha(con),
        }


def test_figures_are_written_as_pngs(finished, tmp_path: Path) -> None:
    store, run_id, _ = finished
    paths = run_results.write_run_figures(store, run_id, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{name}.png" for name in figures.RUN_FIGURES)
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 30_000, path  # axes, curves and text, not a blank canvas
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("evaluator", list(EVALUATORS))
@pytest.mark.parametrize("size", [2, 4])
def test_fig5_mean_lines_equal_python(finished, figure_data, evaluator: str, size: int) -> None:
    _, _, plain = finished
    means = figures.fig5_mean_lines(figure_data["fixed_size"]).set_index(
        ["evaluator", "size", "selection"]
    )
    portfolio_mins, random_mins = [], []
    for problem_id in plain.candidates:
        best = plain.ranking(problem_id, evaluator)[:size]
        portfolio_mins.append(min(plain.judge[c] for c in best))
        for draw in range(30):  # the run's random_draws
            subset = plain.random_subset(problem_id, draw, size)
            random_mins.append(min(plain.judge[c] for c in subset))
    portfolio = means.loc[(evaluator, size, "portfolio")]
    random = means.loc[(evaluator, size, "random")]
    assert portfolio["mean_min_judge"] == pytest.approx(np.mean(portfolio_mins), abs=1e-12)
    assert random["mean_min_judge"] == pytest.approx(np.mean(random_mins), abs=1e-12)
    assert (portfolio["values"], random["values"]) == (4, 4 * 30)
    # s = 6 and 8 exceed the fixture's four valid candidates: no data, as in quality
    assert set(figure_data["fixed_size"]["size"]) == {2, 4}


def test_size_and_coverage_equal_python(finished, figure_data) -> None:
    _, _, plain = finished
    stats = figures.size_and_coverage_by_confidence(figure_data["coverage"])
    for alpha in (0.1, 0.5, 0.98):
        for evaluator in EVALUATORS:
            sizes, covered = [], []
            for problem_id in plain.candidates:
                members = plain.portfolio(problem_id, evaluator, alpha)
                sizes.append(len(members))
                correct = [
                    c["candidate_id"]
                    for c in plain.candidates[problem_id]
                    if plain.correct[c["candidate_id"]]
                ]
                if correct:
                    covered.append(sum(c in members for c in correct) / len(correct))
            line = stats[
                (stats["evaluator"] == evaluator) & np.isclose(stats["one_minus_alpha"], 1 - alpha)
            ].set_index("quantity")
            assert line.loc["portfolio_size", "mean"] == pytest.approx(np.mean(sizes))
            assert line.loc["correct_covered", "mean"] == pytest.approx(np.mean(covered))
            assert line.loc["correct_covered", "count"] == 3  # the problems with a truth


def test_holds_correct_and_baselines_equal_python(finished, figure_data) -> None:
    _, _, plain = finished
    summary = figure_data["summary"]
    with_truth = [p for p in plain.candidates if plain.truth[p] is not None]
    for alpha in (0.5, 0.98):
        for evaluator in EVALUATORS:
            row = summary[
                (summary["evaluator"] == evaluator) & np.isclose(summary["alpha"], alpha)
            ].iloc[0]
            holds = [
                any(plain.correct[c] for c in plain.portfolio(p, evaluator, alpha))
                for p in with_truth
            ]
            assert row["share_portfolio_holds_correct"] == pytest.approx(np.mean(holds))
    pass_at_1 = np.mean(
        [
            sum(bool(plain.correct[c["candidate_id"]]) for c in plain.candidates[p])
            / len(plain.candidates[p])
            for p in with_truth
        ]
    )
    assert summary["mean_pass_at_1"].dropna().unique() == pytest.approx([pass_at_1])


def test_one_distinct_value_is_drawn_as_a_line_not_a_density() -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    try:
        assert figures.density_or_rug(axis, np.array([0.5, 0.5, 0.5]), "red", "x") == "lines"
        assert figures.density_or_rug(axis, np.array([0.2, 0.6]), "blue", "y") == "kde"
        assert figures.density_or_rug(axis, np.array([]), "blue", "z") == "none"
        labels = [text.get_text() for text in axis.legend().get_texts()]
        assert labels == ["x, no KDE: one value", "y"]
    finally:
        plt.close(figure)


def test_empty_run_data_still_draws_every_figure(finished, figure_data, tmp_path: Path) -> None:
    """A run where every problem failed assembles empty views: the figures say so, not crash."""
    empty = {name: frame.iloc[0:0] for name, frame in figure_data.items()}
    drawn = figures.plot_run(
        empty["fixed_size"], empty["coverage"], empty["summary"], "empty", 0, (2, 4)
    )
    paths = figures.save_figures(drawn, tmp_path)
    assert [p.stat().st_size > 10_000 for p in paths] == [True, True, True]


def test_task_writes_figures_and_an_artifact(prefect_harness, finished) -> None:
    from prefect import flow, get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.runtime import flow_run

    from optfolio.run_config import RunRef
    from tasks.figures import draw_run_figures

    store, run_id, _ = finished

    @flow
    def draw() -> tuple[list[str], str]:
        # as portfolio_run calls it: inside a flow run, which the artifact belongs to
        return draw_run_figures(RunRef(store=str(store.root), run_id=run_id)), flow_run.id

    paths, flow_run_id = draw()
    written = [Path(p) for p in paths]
    assert [p.parent for p in written] == [run_results.figures_dir(store, run_id)] * 3
    assert all(p.is_file() for p in written)
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["portfolio-run-figures"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    markdown = str(artifact.data)
    assert markdown.count("data:image/png;base64,") == 3
    assert f"Run {run_id}: dataset summary" in markdown and "| pass@1 |" in markdown
