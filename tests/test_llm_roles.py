"""Generator, evaluator and judge on a real NL4Opt problem with the real local Qwen model.

Few, short calls: the point is well-formed records from real model output, not quality.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from optfolio.llm.cache import ResponseCache
from optfolio.llm.client import LLMClient
from optfolio.llm.generator import generate_candidates
from optfolio.llm.review import evaluate_candidate, judge_candidate
from optfolio.llm.settings import LLMSettings
from optfolio.schemas import CANDIDATES, JUDGMENTS, SCORES
from optfolio.store import RunStore
from servers.local_model.endpoint import health_ok, local_endpoint
from tests.plugins.llm_fixtures import SMOL

pytestmark = pytest.mark.llm

PROBLEM = {
    "problem_id": "nl4opt-12",
    "dataset": "nl4opt",
    "description": (
        "A breakfast joint makes two different sandwiches: a regular and a special. Both need"
        " eggs and bacon. Each regular sandwich requires 2 eggs and 3 slices of bacon. Each"
        " special sandwich requires 3 eggs and 5 slices of bacon. The joint has a total of 40"
        " eggs and 70 slices of bacon. It makes a profit of $3 per regular sandwich and a profit"
        " of $4 per special sandwich. How many of each sandwich should be made to maximize"
        " profit?"
    ),
    "objective_truth": 60.0,
    "solution_truth": (
        '{"Number of regular sandwiches": "20.0", "Number of special sandwiches": "0.0"}'
    ),
}

GOOD_CODE = """import pulp
m = pulp.LpProblem("sandwiches", pulp.LpMaximize)
r = pulp.LpVariable("regular", lowBound=0, cat="Integer")
s = pulp.LpVariable("special", lowBound=0, cat="Integer")
m += 3 * r + 4 * s
m += 2 * r + 3 * s <= 40
m += 3 * r + 5 * s <= 70
m.solve(pulp.PULP_CBC_CMD(msg=False))
print("STATUS:", pulp.LpStatus[m.status])
print("OBJECTIVE:", pulp.value(m.objective))"""

CANDIDATE = {
    "problem_id": "nl4opt-12",
    "candidate_id": "c-good",
    "formulation": "max 3r + 4s s.t. 2r + 3s <= 40, 3r + 5s <= 70, r, s >= 0 integer",
    "code": GOOD_CODE,
}
EXECUTION = {
    "problem_id": "nl4opt-12",
    "candidate_id": "c-good",
    "status": "ok",
    "exit_code": 0,
    "stdout": "STATUS: Optimal\nOBJECTIVE: 60.0\n",
    "stderr": "",
    "solver_status": "Optimal",
    "objective": 60.0,
}


def test_generator_records(qwen_settings: LLMSettings, tmp_path: Path) -> None:
    cache = ResponseCache.in_store(tmp_path)
    with LLMClient(qwen_settings, cache=cache) as client:
        table = generate_candidates(
            client, PROBLEM["problem_id"], PROBLEM["description"], n=2, max_tokens=200, seed=7
        )
        assert client.usage.requests == 1  # both samples in one request with n=2
    assert table.schema == CANDIDATES
    rows = table.to_pylist()
    assert sum(r["n_samples"] for r in rows) == 2
    assert sorted(i for r in rows for i in r["sample_indices"]) == [0, 1]
    for row in rows:
        assert row["text"] and row["model"] == qwen_settings.model
        assert row["token_count"] and row["token_count"] <= 200
        assert math.isfinite(row["logprob_sum"]) and row["logprob_sum"] < 0
        assert row["logprob_mean"] == pytest.approx(row["logprob_sum"] / row["token_count"])
        assert row["finish_reason"] in {"stop", "length"}
        assert row["valid"] == (row["invalid_reason"] is None)
        if row["valid"]:
            assert row["code"] and row["solver"]
        assert row["human_rank"] is None
    # The run store accepts it as is; a re-run is served from the cache.
    RunStore(tmp_path).write_part("candidates", "run-test", "nl4opt-12", table)
    with LLMClient(qwen_settings, cache=cache) as again:
        rerun = generate_candidates(
            again, PROBLEM["problem_id"], PROBLEM["description"], n=2, max_tokens=200, seed=7
        )
        assert again.usage.requests == 0 and again.usage.cache_hits == 2
    assert rerun.equals(table)


def test_evaluator_records(qwen_settings: LLMSettings) -> None:
    with LLMClient(qwen_settings) as client:
        table = evaluate_candidate(
            client, PROBLEM["description"], CANDIDATE, EXECUTION, m=2, max_tokens=40, seed=1
        )
        reasked = sum(table["reasked"].to_pylist())
        # Both samples in one request; replies without a score asked again in one more.
        assert client.usage.requests == 1 + (reasked > 0)
        assert client.usage.samples == 2 + reasked
    assert table.schema == SCORES
    rows = table.to_pylist()
    assert [r["sample_index"] for r in rows] == [0, 1]
    for row in rows:
        assert row["raw_text"] and row["candidate_id"] == "c-good"
        assert row["score"] is None or 1 <= row["score"] <= 100
        assert row["reasked"] in (True, False)


def test_judge_records(qwen_settings: LLMSettings) -> None:
    with LLMClient(qwen_settings) as client:
        table = judge_candidate(client, PROBLEM, CANDIDATE, EXECUTION, m=1, max_tokens=40, seed=2)
        [row] = table.to_pylist()
        assert client.usage.requests == (2 if row["reasked"] else 1)
    assert table.schema == JUDGMENTS
    assert row["raw_text"]
    if row["score"] is None:
        assert row["normalized_score"] is None
    else:
        assert row["normalized_score"] == pytest.approx((row["score"] - 1) / 99)


def test_local_endpoint_starts_and_stops_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with local_endpoint(LLMSettings(model=SMOL)) as settings:
        assert settings.base_url and health_ok(settings.base_url)
        with LLMClient(settings) as client:
            [sample] = client.sample([{"role": "user", "content": "Hi"}], max_tokens=4)
        assert sample.text is not None
    assert not health_ok(settings.base_url)
    # A configured endpoint is used as is: nothing is started.
    remote = LLMSettings(model="gpt-x", base_url="http://127.0.0.1:9/v1")
    with local_endpoint(remote) as same:
        assert same is remote


def test_local_server_dies_with_a_killed_run(llm_server: str) -> None:
    # A run killed without cleanup (SIGKILL) must not leave its model server behind.
    import subprocess
    import sys
    import time

    script = (
        "from optfolio.llm import LLMSettings\n"
        "from servers.local_model.endpoint import local_endpoint\n"
        f"with local_endpoint(LLMSettings(model={SMOL!r})) as s:\n"
        "    print(s.base_url, flush=True)\n"
        "    import time; time.sleep(600)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        base_url = run.stdout.readline().strip()
        assert health_ok(base_url)
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 30
    while health_ok(base_url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not health_ok(base_url)
