"""Stage: the LLM evaluator scores every valid candidate of one problem m times."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.llm import evaluate_candidate
from optfolio.pipeline import review_problem
from optfolio.store import RunStore
from tasks import retry_transient


# Retries re-ask only what is missing: every answered sample is in the response cache.
@task(
    retries=2,
    retry_delay_seconds=[10, 60],
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
    task_run_name="evaluate-{problem_id}",
)
def evaluate(
    store_root: str,
    run_id: str,
    problem_id: str,
    endpoint: dict,
    m: int,
    max_tokens: int,
    seed: int,
) -> str:
    path = review_problem(
        RunStore(store_root),
        run_id,
        problem_id,
        "evaluator",
        endpoint,
        lambda client, problem, candidate, execution: evaluate_candidate(
            client,
            problem["description"],
            candidate,
            execution,
            m=m,
            max_tokens=max_tokens,
            seed=seed,
        ),
    )
    return str(path)
