"""Flow ``review``: a person reviews a finished run's portfolios in the Prefect UI.

Every problem's portfolio is published as an artifact; then, for each problem not yet
decided, the flow run pauses with a form (one dropdown of the portfolio's members plus
``reject all``, a comment) and resumes when the reviewer submits it. A refused answer (a
rejection without a comment) pauses again, saying why. ``optfolio review decide`` makes the
same decision from a shell.
"""

from __future__ import annotations

from prefect import flow
from prefect.flow_runs import pause_flow_run

from optfolio.errors import InputError
from optfolio.review import Decision, ProblemReview, ReviewParameters, make_decision
from tasks.review import (
    decision_form,
    load_portfolios,
    problems_with_decisions,
    publish_portfolio,
    record_decision,
)

# How often a paused run asks the server whether it was resumed (Prefect's default is 10 s).
RESUME_POLL_S = 2


@flow(name="review", log_prints=True)
def review(parameters: ReviewParameters) -> dict[str, str]:
    """Publish each problem's portfolio at alpha, then ask for a decision on each undecided one.
    Returns {problem: chosen candidate id, or "rejected"} for the decisions made in this run."""
    p = parameters
    reviews = load_portfolios(p)
    publish_portfolio.map(reviews).result()
    made: dict[str, str] = {}
    for problem in reviews:
        # read afresh each time: `optfolio review decide` may have decided it meanwhile
        decided = problems_with_decisions(p.store, p.run_id)
        if problem.problem_id in decided and not p.revisit_decided:
            print(f"{problem.problem_id}: already decided, skipped (revisit_decided to change)")
            continue
        decision = ask_reviewer(problem, p.reviewer, p.wait_per_problem_s)
        record_decision(p.store, decision)
        made[problem.problem_id] = decision.candidate_id or "rejected"
        print(f"{problem.problem_id}: {decision.decision} {decision.candidate_id or ''}".rstrip())
    return made


def ask_reviewer(problem: ProblemReview, reviewer: str, wait_s: int) -> Decision:
    """Pause until the reviewer submits a valid decision for PROBLEM (asks again if not)."""
    refusal: str | None = None
    while True:
        answer = pause_flow_run(
            wait_for_input=decision_form(problem, reviewer, refusal),
            timeout=wait_s,
            poll_interval=RESUME_POLL_S,
        )
        try:
            return make_decision(
                problem, answer.candidate, answer.comment, answer.reviewer, source="ui"
            )
        except InputError as error:
            refusal = str(error)
            print(f"answer refused, asking again: {refusal}")
