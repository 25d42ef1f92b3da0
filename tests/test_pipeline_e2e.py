"""The main job end to end: the real local model, the real Docker sandbox, real Prefect.

2 problems × 3 candidates (m = 2 evaluator samples, 1 judge sample). One session-scoped run
serves every assertion; the re-run checks resume without paying for answered calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from optfolio import warehouse
from optfolio.errors import InputError
from optfolio.run_config import parse_parameters
from optfolio.runs import open_run
from optfolio.store import RunStore, part_name
from tests.plugins.llm_fixtures import QWEN, SMOL
from tests.test_quality_sql import assert_quality_matches, python_quality

# The module's run makes ~30 real model calls on CPU: minutes on a quiet machine, more on a
# busy or slow one (2026-12-02: ~7 tok/s decoding, 4x slower than measured before); the
# whole run counts against the first test that uses it.
pytestmark = pytest.mark.timeout(3600)

RUN = "e2e"
CANDIDATES = 3
CANARY_KEY = "sk-canary-0123456789-never-store-me"
STATUSES = {"ok", "error", "timeout", "oom", "output_limit", "skipped"}


@pytest.fixture(scope="module")
def finished_run(prefect_harness, sandbox_image, llm_server, tmp_path_factory) -> RunStore:
    from flows.portfolio_run import portfolio_run

    store_root = tmp_path_factory.mktemp("e2e-store")
    parameters = parse_parameters(
        limit=2,
        candidates=CANDIDATES,
        eval_samples=2,
        judge_samples=1,
        store=str(store_root),
        run_id=RUN,
        generator={"model": QWEN, "base_url": llm_server, "timeout_s": 1800},
        evaluator={"model": QWEN, "base_url": llm_server, "timeout_s": 1800},
        # One local server answers the client's concurrent requests one after another: a
        # request's wait in that queue counts against its timeout, so all roles get a long one.
        judge={"model": QWEN, "base_url": llm_server, "timeout_s": 1800},
        generator_max_tokens=700,
        review_max_tokens=96,
        alphas=[0.1, 0.3, 0.5, 0.9],
        sizes=[2, 4],
        random_draws=5,
    )
    os.environ["OPENAI_API_KEY"] = CANARY_KEY  # must never reach the store
    try:
        outcome = portfolio_run(parameters)
    finally:
        del os.environ["OPENAI_API_KEY"]
    assert outcome["run_id"] == RUN and outcome["problems"] == 2
    return RunStore(store_root)


def test_every_stage_wrote_its_rows(finished_run: RunStore) -> None:
    store = finished_run
    problems = store.read("problems", [RUN]).to_pylist()
    assert len(problems) == 2
    candidates = store.read("candidates", [RUN]).to_pylist()
    per_problem = defaultdict(int)
    for candidate in candidates:
        per_problem[candidate["problem_id"]] += candidate["n_samples"]
        if candidate["valid"]:
            assert candidate["code"] and candidate["token_count"] > 0
            assert candidate["logprob_mean"] is not None and candidate["logprob_mean"] < 0
    assert dict(per_problem) == {p["problem_id"]: CANDIDATES for p in problems}
    executions = {r["candidate_id"]: r for r in store.read("executions", [RUN]).to_pylist()}
    assert executions.keys() == {c["candidate_id"] for c in candidates}
    for candidate in candidates:
        status = executions[candidate["candidate_id"]]["status"]
        assert status in STATUSES
        assert (status == "skipped") == (not candidate["valid"])
    valid = [c for c in candidates if c["valid"]]
    assert valid, "Qwen should write at least one parseable model for two small LPs"
    scores = store.read("scores", [RUN]).to_pylist()
    assert len(scores) == 2 * len(valid)
    judgments = store.read("judgments", [RUN]).to_pylist()
    assert len(judgments) == len(valid)
    assert all(j["score"] is None or 0 <= j["normalized_score"] <= 1 for j in judgments)
    usage = store.read("llm_usage", [RUN]).to_pylist()
    assert {u["role"] for u in usage} == {"generator", "evaluator", "judge"}
    assert sum(u["completion_tokens"] for u in usage) > 0


def test_assembled_outputs_and_sql_equal_the_python_reference(finished_run: RunStore) -> None:
    store = finished_run
    for view in ("rankings", "portfolio_sizes", "portfolios", "quality", "dataset_summary"):
        path = store.root / "assembled" / view / f"run_id={RUN}" / "part-0.parquet"
        assert pq.read_metadata(path).num_rows > 0, view
    data = {
        table: store.read(table, [RUN]).drop_columns(["run_id"]).to_pylist()
        for table in ("problems", "candidates", "executions", "scores", "judgments")
    }
    import tests.test_quality_sql as reference

    settings = warehouse.AssemblySettings(
        alphas=reference.ALPHAS,
        sizes=reference.SIZES,
        random_draws=reference.DRAWS,
        tie_seed=reference.SEED,
    )
    expected = python_quality(data)
    with warehouse.connect(store, [RUN], settings) as con:
        frame = con.sql("select * from quality").df()
    assert_quality_matches(frame, expected)


def test_no_secret_reaches_the_store(finished_run: RunStore) -> None:
    for path in finished_run.root.rglob("*"):
        if path.is_file():
            assert CANARY_KEY.encode() not in path.read_bytes(), path


def test_rerun_skips_done_work_and_pays_nothing_again(finished_run: RunStore, llm_server) -> None:
    from flows.portfolio_run import portfolio_run

    store = finished_run
    first_problem = store.read("problems", [RUN]).column("problem_id")[0].as_py()
    before = {t: store.read(t, [RUN]).num_rows for t in ("candidates", "executions", "scores")}
    # Lose one problem's generated part (as if the run was killed before writing it).
    store.part_path("candidates", RUN, part_name(first_problem)).unlink()
    usage_part = store.part_path("llm_usage", RUN, f"generator-{part_name(first_problem)}")
    usage_part.unlink()
    portfolio_run(_same_parameters(store))
    after = {t: store.read(t, [RUN]).num_rows for t in ("candidates", "executions", "scores")}
    assert after == before, "no duplicate rows"
    (usage,) = pq.read_table(usage_part).to_pylist()
    assert usage["requests"] == 0 and usage["cache_hits"] == CANDIDATES, usage


def _same_parameters(store: RunStore):
    import json

    manifest = json.loads((store.root / "runs" / f"run_id={RUN}" / "manifest.json").read_text())
    return parse_parameters(**manifest["parameters"])


def test_review_page_and_figures_show_every_portfolio_member(
    finished_run: RunStore, chromium, llm_server: str, tmp_path: Path
) -> None:
    """The real run's figures were drawn by the flow, and its review page shows every member
    of every portfolio at α = 0.5 (ranked by the LLM evaluator), visibly, in Chromium."""
    from optfolio import run_results
    from optfolio.report import write_report

    store = finished_run
    figures = sorted(run_results.figures_dir(store, RUN).glob("*.png"))
    assert [p.stem for p in figures] == sorted(
        ["fig5_min_judge_kde", "size_and_coverage_vs_confidence", "holds_correct_vs_confidence"]
    )
    assert all(p.stat().st_size > 10_000 for p in figures)

    with run_results.connect_run(store, RUN) as con:
        members = [
            row[0]
            for row in con.execute(
                "select candidate_id from portfolios where evaluator = 'llm' and alpha = 0.5"
                " order by problem_id, rank"
            ).fetchall()
        ]
    assert members, "a portfolio needs at least one valid candidate"
    written = write_report(store, RUN, tmp_path / "report.html", alpha=0.5)
    assert (written.problems, written.members, written.figures) == (2, len(members), 3)
    html = written.path.read_text()
    assert CANARY_KEY not in html and llm_server not in html  # model names only, no endpoint

    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(written.path.as_uri(), wait_until="load")
        shown = page.locator("article.member").evaluate_all(
            "cards => cards.map(card => card.dataset.candidateId)"
        )
        assert shown == members
        for candidate in members:
            card = page.locator(f'article.member[data-candidate-id="{candidate}"]')
            card.scroll_into_view_if_needed()
            assert card.is_visible(), candidate
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        page.close()


def test_resuming_with_other_parameters_is_refused(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    open_run(store, "r1", parse_parameters(candidates=4))
    open_run(store, "r1", parse_parameters(candidates=4, concurrency=8))  # same work: fine
    with pytest.raises(InputError, match="other parameters"):
        open_run(store, "r1", parse_parameters(candidates=5))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidates", "0"], "parameter candidates"),
        (["--eval-samples", "0"], "parameter eval_samples"),
        (["--dataset", "nl4opt", "--path", "/does/not/exist"], "no such file"),
        (["--ids", "no-such-problem"], "no-such-problem"),
    ],
)
def test_bad_run_input_is_refused_before_any_call(tmp_path: Path, args, message) -> None:
    cli = Path(sys.executable).with_name("optfolio")
    done = subprocess.run(
        [str(cli), "run", "--store", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "candidates").exists()


@pytest.mark.slow
def test_cli_run_with_the_embedded_local_model(sandbox_image, tmp_path: Path) -> None:
    """No endpoint configured: `optfolio run` starts the local server itself (SmolLM2 keeps
    this quick; its answers need not be good), prints the summary and where results are."""
    cli = Path(sys.executable).with_name("optfolio")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run(
        [
            str(cli),
            "run",
            "--limit",
            "1",
            "--candidates",
            "2",
            "--eval-samples",
            "1",
            "--judge-samples",
            "1",
            "--model",
            SMOL,
            "--generator-max-tokens",
            "200",
            "--store",
            str(tmp_path / "store"),
            "--run-id",
            "cli",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Dataset summary" in done.stdout and "run id:  cli" in done.stdout
    store = RunStore(tmp_path / "store")
    assert store.read("candidates", ["cli"]).num_rows >= 1
    listed = subprocess.run(
        [str(cli), "runs", "--store", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and listed.stdout.startswith("cli ")
