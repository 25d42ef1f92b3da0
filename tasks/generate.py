"""Stage: sample N candidate models for one problem (the generator LLM)."""

from __future__ import annotations

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.llm import LLMClient, ResponseCache, generate_candidates
from optfolio.llm.settings import llm_settings
from optfolio.run_config import ProblemRef, RoleRequest
from optfolio.run_rows import problem_rows, usage_row
from optfolio.schemas import LLM_USAGE
from optfolio.store import RunStore, part_name
from tasks import retry_transient
from tasks._prefect_settings import endpoint_slot, secret_api_key


# Retries re-ask only what is missing: every answered sample is in the response cache.
@task(
    retries=2,
    retry_delay_seconds=[10, 60],
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
    task_run_name="generate-{problem.problem_id}",
)
def generate(problem: ProblemRef, request: RoleRequest, endpoint_limit: int = 0) -> str:
    """N candidates for one problem (``request.samples``); skipped if its part is written.
    Each request holds a slot of the endpoint's global limit when ``endpoint_limit`` > 0."""
    store, run_id, problem_id = RunStore(problem.store), problem.run_id, problem.problem_id
    part = part_name(problem_id)
    if store.has_part("candidates", run_id, part):
        return str(store.part_path("candidates", run_id, part))
    (row,) = problem_rows(store, "problems", run_id, problem_id)
    endpoint = request.endpoint
    settings = llm_settings(endpoint, api_key=secret_api_key(endpoint, "generator"))
    with LLMClient(
        settings,
        cache=ResponseCache.in_store(store.root),
        request_slot=endpoint_slot(endpoint, endpoint_limit),
    ) as client:
        candidates = generate_candidates(
            client,
            problem_id,
            row["description"],
            n=request.samples,
            max_tokens=request.max_tokens,
            seed=request.seed,
        )
        usage = usage_row(problem_id, "generator", settings.model, client.usage.snapshot())
    store.write_part(
        "llm_usage", run_id, f"generator-{part}", pa.Table.from_pylist([usage], schema=LLM_USAGE)
    )
    return str(store.write_part("candidates", run_id, part, candidates))
