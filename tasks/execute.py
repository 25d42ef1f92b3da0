"""Stage: run every valid candidate of one problem in the Docker sandbox."""

from __future__ import annotations

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.errors import ServiceUnavailable
from optfolio.pipeline import problem_rows
from optfolio.schemas import EXECUTIONS
from optfolio.store import RunStore, part_name
from sandbox import Sandbox
from sandbox.limits import Limits
from tasks import retry_transient


@task(
    retries=2,
    retry_delay_seconds=[5, 30],
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
    task_run_name="execute-{problem_id}",
)
def execute(
    store_root: str,
    run_id: str,
    problem_id: str,
    timeout_s: float,
    memory_mb: int,
    parallelism: int,
) -> str:
    store = RunStore(store_root)
    part = part_name(problem_id)
    if store.has_part("executions", run_id, part):
        return str(store.part_path("executions", run_id, part))
    candidates = problem_rows(store, "candidates", run_id, problem_id)
    runnable = [c for c in candidates if c["valid"] and c["code"]]
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb)
    with Sandbox(limits=limits) as box:
        results = box.run_many([c["code"] for c in runnable], parallelism=parallelism)
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
