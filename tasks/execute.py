"""Stage: run every valid candidate of one problem in the Docker sandbox."""

from __future__ import annotations

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.errors import ServiceUnavailable
from optfolio.run_config import ProblemRef, SandboxSettings
from optfolio.run_rows import problem_rows
from optfolio.schemas import EXECUTIONS
from optfolio.store import RunStore, part_name
from sandbox import Sandbox
from tasks import retry_transient


@task(
    retries=2,
    retry_delay_seconds=[5, 30],
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
    task_run_name="execute-{problem.problem_id}",
)
def execute(problem: ProblemRef, sandbox: SandboxSettings) -> str:
    """Every valid candidate of one problem in the sandbox; skipped if its part is written."""
    store, run_id, problem_id = RunStore(problem.store), problem.run_id, problem.problem_id
    part = part_name(problem_id)
    if store.has_part("executions", run_id, part):
        return str(store.part_path("executions", run_id, part))
    candidates = problem_rows(store, "candidates", run_id, problem_id)
    runnable = [c for c in candidates if c["valid"] and c["code"]]
    with Sandbox(limits=sandbox.container_limits()) as box:
        results = box.run_many([c["code"] for c in runnable], parallelism=sandbox.parallelism)
    failed = [r for r in results if r.status == "sandbox_error"]
    if failed:
        # The engine failed, not the candidate: write nothing, so a retry or re-run redoes it.
        raise ServiceUnavailable(
            f"problem {problem_id!r}: sandbox failed for {len(failed)} of {len(results)}"
            f" candidates: {failed[0].stderr[-300:]}"
        )
    rows = [
        {"problem_id": problem_id, "candidate_id": c["candidate_id"]} | result.to_row()
        for c, result in zip(runnable, results, strict=True)
    ]
    rows += [
        {"problem_id": problem_id, "candidate_id": c["candidate_id"], "status": "skipped"}
        for c in candidates
        if not (c["valid"] and c["code"])
    ]
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in EXECUTIONS.names} for row in rows], schema=EXECUTIONS
    )
    return str(store.write_part("executions", run_id, part, table))
