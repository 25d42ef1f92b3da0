"""Stage: the LLM evaluator scores every valid candidate of one problem m times."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.llm import evaluate_candidate
from optfolio.llm.review_stage import review_problem
from optfolio.run_config import ProblemRef, RoleRequest
from optfolio.store import RunStore
from tasks import retry_transient
from tasks._prefect_settings import endpoint_slot, secret_api_key


# Retries re-ask only what is missing: every answered sample is in the response cache.
@task(
    retries=2,
    retry_delay_seconds=[10, 60],
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
    task_run_name="evaluate-{problem.problem_id}",
)
def evaluate(problem: ProblemRef, request: RoleRequest, endpoint_limit: int = 0) -> str:
    """m scores per valid candidate (``request.samples``); skipped if its part is written.
    Requests hold slots of the endpoint's global limit as in ``generate``."""
    path = review_problem(
        RunStore(problem.store),
        problem.run_id,
        problem.problem_id,
        "evaluator",
        request.endpoint,
        lambda client, row, candidate, execution: evaluate_candidate(
            client,
            row["description"],
            candidate,
            execution,
            m=request.samples,
            max_tokens=request.max_tokens,
            seed=request.seed,
        ),
        api_key=secret_api_key(request.endpoint, "evaluator"),
        request_slot=endpoint_slot(request.endpoint, endpoint_limit),
    )
    return str(path)
