"""Stage: review a finished run. Each problem's portfolio becomes a Prefect artifact; the
reviewer's answer arrives through a form built per problem; decisions go to the store."""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import Field, create_model

from optfolio.review import (
    REJECT_ALL,
    Decision,
    ProblemReview,
    ReviewParameters,
    artifact_key,
    decided_problems,
    load_reviews,
    review_markdown,
    summary_markdown,
    write_decision,
)
from optfolio.store import RunStore


@task(retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_portfolios(parameters: ReviewParameters) -> list[ProblemReview]:
    """Each problem's portfolio at the parameters' α, ranking and unit, with what the reviewer
    needs to judge it."""
    p = parameters
    return load_reviews(RunStore(p.store), p.run_id, p.alpha, p.evaluator, p.problem_ids, p.unit)


@task(cache_policy=NO_CACHE, task_run_name="publish-{review.problem_id}")
def publish_portfolio(review: ProblemReview) -> str:
    """The whole portfolio of one problem as a markdown artifact; returns its key."""
    key = artifact_key(review.run_id, review.problem_id)
    create_markdown_artifact(
        key=key,
        markdown=review_markdown(review),
        description=f"Portfolio of {review.problem_id} at alpha={review.alpha:g}, for review",
    )
    return key


@task(cache_policy=NO_CACHE)
def problems_with_decisions(store_root: str, run_id: str) -> list[str]:
    return sorted(decided_problems(RunStore(store_root), run_id))


@task(
    retries=2,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="decide-{decision.problem_id}",
)
def record_decision(store_root: str, decision: Decision) -> str:
    """Write (or replace) the problem's decision; returns the part's path."""
    return str(write_decision(RunStore(store_root), decision))


def decision_form(
    review: ProblemReview, reviewer: str, problem: str | None = None
) -> type[RunInput]:
    """The form the paused flow shows for REVIEW: a dropdown of the portfolio's members (best
    first; under the answer unit its answers) plus ``reject all``, a comment and the reviewer's
    name. PROBLEM is what was wrong with the previous answer, shown above the table."""
    options = (*review.choices, REJECT_ALL)
    # under the answer unit the choice is an answer; what a decision records is a candidate
    choice = "answer" if review.unit == "answer" else "candidate"
    recorded = " (its representative candidate is recorded)" if choice == "answer" else ""
    lines = [f"**Not recorded: {problem}**", ""] if problem else []
    lines += [
        summary_markdown(review),
        "",
        f"The whole portfolio (formulations, code, output) is the artifact"
        f" `{artifact_key(review.run_id, review.problem_id)}`. Choose one {choice}{recorded},"
        f" or `{REJECT_ALL}` with a comment saying why.",
    ]
    form = create_model(
        "ReviewDecision",
        __base__=RunInput,
        candidate=(
            Literal[options],  # type: ignore[valid-type]  (one dropdown option per member)
            Field(
                title=choice.capitalize(),
                description=f"The portfolio member you commit to{recorded}",
            ),
        ),
        comment=(str, Field("", title="Comment", description="Required when rejecting all")),
        reviewer=(str, Field(reviewer, title="Reviewer")),
    )
    form._description = "\n".join(lines)
    return form
