"""The evaluator and the judge ask again, once, for a reply without a readable score: against a
scripted OpenAI-shaped endpoint (real HTTP through the real ``openai`` package), since a real
model cannot be made to forget the score on demand."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from optfolio.llm.cache import ResponseCache
from optfolio.llm.client import LLMClient
from optfolio.llm.review import evaluate_candidate, judge_candidate, reask_seed
from optfolio.llm.review_stage import review_problem
from optfolio.llm.settings import LLMSettings
from optfolio.run_config import ModelEndpoint
from optfolio.schemas import CANDIDATES, EXECUTIONS, PROBLEMS
from optfolio.store import RunStore, part_name
from tests.plugins.llm_fixtures import Fault, FaultServer

PROBLEM = {
    "problem_id": "p-1",
    "dataset": "test",
    "description": "Maximize 3x subject to x <= 20.",
    "objective_truth": 60.0,
    "solution_truth": '{"x": 20}',
}
CANDIDATE = {
    "problem_id": "p-1",
    "candidate_id": "c-1",
    "n_samples": 1,
    "formulation": "max 3x s.t. x <= 20",
    "code": "import pulp",
    "valid": True,
}
EXECUTION = {
    "problem_id": "p-1",
    "candidate_id": "c-1",
    "status": "ok",
    "stdout": "STATUS: Optimal\nOBJECTIVE: 60.0\n",
    "objective": 60.0,
}
UNREADABLE = "The model looks fine to me."


def client(server: FaultServer, cache: ResponseCache | None = None) -> LLMClient:
    return LLMClient(LLMSettings(model="m", base_url=server.base_url, max_retries=0), cache=cache)


def test_an_unreadable_reply_is_asked_again_once_and_replaced(fault_server: FaultServer) -> None:
    fault_server.then(
        Fault(texts=("Variables match.\nSCORE: 70", UNREADABLE, "SCORE: 65")),
        Fault(texts=("Checked again.\nSCORE: 80",)),
    )
    with client(fault_server) as llm:
        rows = evaluate_candidate(
            llm, PROBLEM["description"], CANDIDATE, EXECUTION, m=3, seed=5
        ).to_pylist()
        usage = llm.usage.snapshot()
    assert [(r["sample_index"], r["score"], r["reasked"]) for r in rows] == [
        (0, 70.0, False),
        (1, 80.0, True),  # the second ask's reply in the unreadable one's place
        (2, 65.0, False),
    ]
    assert rows[1]["raw_text"] == "Checked again.\nSCORE: 80"
    first, again = fault_server.requests
    assert first["n"] == 3 and first["seed"] == 5
    # One sample asked again: n = 1 (the SDK omits it), seeded past the first ask's seeds.
    assert "n" not in again and again["seed"] == reask_seed(5, 3) == 8
    assert again["messages"] == first["messages"]
    assert (usage["requests"], usage["samples"]) == (2, 4)


def test_a_reply_still_unreadable_stays_null_after_one_reask(fault_server: FaultServer) -> None:
    fault_server.default = Fault(texts=(UNREADABLE,))
    with client(fault_server) as llm:
        rows = judge_candidate(llm, PROBLEM, CANDIDATE, EXECUTION, m=2, seed=0).to_pylist()
        assert llm.usage.requests == 2
    assert len(fault_server.requests) == 2  # asked once more, never until it parses
    assert fault_server.requests[1]["n"] == 2 and fault_server.requests[1]["seed"] == 2
    for index, row in enumerate(rows):
        assert row["sample_index"] == index and row["reasked"] is True
        assert row["score"] is None and row["normalized_score"] is None
        assert row["raw_text"] == UNREADABLE


def test_readable_replies_are_not_asked_again(fault_server: FaultServer) -> None:
    fault_server.default = Fault(texts=("SCORE: 90",))
    with client(fault_server) as llm:
        rows = judge_candidate(llm, PROBLEM, CANDIDATE, EXECUTION, m=2, seed=0).to_pylist()
    assert len(fault_server.requests) == 1
    assert [(r["score"], r["reasked"]) for r in rows] == [(90.0, False), (90.0, False)]


def test_the_stage_counts_the_reask_in_llm_usage_and_a_resume_repeats_it(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    store, run = RunStore(tmp_path), "run-reask"
    part = part_name(PROBLEM["problem_id"])
    for table, schema, row in (
        ("problems", PROBLEMS, PROBLEM),
        ("candidates", CANDIDATES, CANDIDATE),
        ("executions", EXECUTIONS, EXECUTION),
    ):
        data = pa.Table.from_pylist([{f: row.get(f) for f in schema.names}], schema)
        store.write_part(table, run, "dataset" if table == "problems" else part, data)
    fault_server.then(Fault(texts=(UNREADABLE, "SCORE: 40")), Fault(texts=("SCORE: 55",)))
    endpoint = ModelEndpoint(model="m", base_url=fault_server.base_url)

    def review() -> tuple[list[dict], dict]:
        path = review_problem(
            store,
            run,
            PROBLEM["problem_id"],
            "evaluator",
            endpoint,
            lambda llm, row, candidate, execution: evaluate_candidate(
                llm, row["description"], candidate, execution, m=2, seed=3
            ),
        )
        [usage] = pq.read_table(store.part_path("llm_usage", run, f"evaluator-{part}")).to_pylist()
        return pq.read_table(path).to_pylist(), usage

    rows, usage = review()
    assert [(r["score"], r["reasked"]) for r in rows] == [(55.0, True), (40.0, False)]
    assert (usage["requests"], usage["samples"], usage["reasked_samples"]) == (2, 3, 1)
    # A resume that rewrites the part asks nothing: both asks come from the response cache.
    store.part_path("scores", run, part).unlink()
    again, usage = review()
    assert again == rows
    assert (usage["requests"], usage["cache_hits"], usage["reasked_samples"]) == (0, 3, 1)
    assert len(fault_server.requests) == 2
