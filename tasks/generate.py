"""Stage: sample N candidate models for one problem (the generator LLM)."""

from __future__ import annotations

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.llm import LLMClient, ResponseCache, generate_candidates
from optfolio.pipeline import llm_settings, problem_rows, usage_row
from optfolio.schemas import LLM_USAGE
from optfolio.store import RunStore, part_name
from tasks import retry_transient


# Retries re-ask only what is missing: every answered sample is in the response cache.
@task(
    retries=2,
    retry_delay_seconds=[10, 60],
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
    task_run_name="generate-{problem_id}",
)
def generate(
    store_root: str,
    run_id: str,
    problem_id: str,
    endpoint: dict,
    n: int,
    max_tokens: int,
    seed: int,
) -> str:
    store = RunStore(store_root)
    part = part_name(problem_id)
    if store.has_part("candidates", run_id, part):
        return str(store.part_path("candidates", run_id, part))
    (problem,) = problem_rows(store, "problems", run_id, problem_id)
    settings = llm_settings(endpoint)
    with LLMClient(settings, cache=ResponseCache.in_store(store_root)) as client:
        candidates = generate_candidates(
            client, problem_id, problem["description"], n=n, max_tokens=max_tokens, seed=seed
        )
        usage = usage_row(problem_id, "generator", settings.model, client.usage.snapshot())
    store.write_part(
        "llm_usage", run_id, f"generator-{part}", pa.Table.from_pylist([usage], schema=LLM_USAGE)
    )
    return str(store.write_part("candidates", run_id, part, candidates))
