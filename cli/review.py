"""``optfolio review``: see a finished run's portfolios and decide, from a shell.

The same decisions as the ``review`` flow's form in the Prefect UI (``optfolio.review``
validates both). A ``review`` flow run skips the problems decided here when it reaches them.
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import existing_store, model_option
from optfolio.errors import InputError
from optfolio.review import ReviewParameters

if TYPE_CHECKING:
    from optfolio.store import RunStore

review_app = typer.Typer(
    name="review",
    help="Review a finished run: show its portfolios, choose one candidate per problem.",
    no_args_is_help=True,
)

# The options the commands share with the review flow: name, default and help are its fields'.
RUN = model_option(ReviewParameters, "run_id")
STORE = model_option(ReviewParameters, "store")
ALPHA = model_option(ReviewParameters, "alpha")
EVALUATOR = model_option(ReviewParameters, "evaluator")
UNIT = model_option(ReviewParameters, "unit")


def _store(store: str) -> RunStore:
    return existing_store(store)


@review_app.command("show")
def show_command(
    run: str = RUN,
    store: str = STORE,
    alpha: float = ALPHA,
    evaluator: str = EVALUATOR,
    unit: str = UNIT,
    problem: Annotated[
        list[str] | None, typer.Option(help="Only this problem (repeatable).")
    ] = None,
    full: Annotated[
        bool, typer.Option(help="Formulation, code and output of each member.")
    ] = False,
) -> None:
    """Each problem's portfolio: members best first, with run, scores and correctness (with
    --unit answer: answers best first, each with its member candidates under it)."""
    from optfolio.review import decided_problems, load_reviews, review_markdown, summary_markdown

    run_store = _store(store)
    reviews = load_reviews(run_store, run, alpha, evaluator, problem, unit)
    decided = decided_problems(run_store, run)
    for review in reviews:
        typer.echo(review_markdown(review) if full else summary_markdown(review))
        typer.echo(f"decided: {'yes' if review.problem_id in decided else 'no'}\n")


@review_app.command("decide")
def decide_command(
    problem: Annotated[str, typer.Option(help="The problem decided on.")],
    run: str = RUN,
    choose: Annotated[
        str | None,
        typer.Option(
            help="The candidate id to commit to (a portfolio member); with --unit answer an"
            " answer id, which records the answer's representative candidate."
        ),
    ] = None,
    reject: Annotated[bool, typer.Option(help="Reject every member (needs --comment).")] = False,
    comment: Annotated[str, typer.Option(help="Why; required with --reject.")] = "",
    reviewer: Annotated[str | None, typer.Option(help="Your name (default: $USER).")] = None,
    store: str = STORE,
    alpha: float = ALPHA,
    evaluator: str = EVALUATOR,
    unit: str = UNIT,
) -> None:
    """Record a decision for one problem (replacing an earlier one)."""
    from optfolio.review import load_reviews, make_decision, write_decision

    if (choose is None) == (not reject):
        raise InputError(f"problem {problem!r}: give exactly one of --choose CANDIDATE or --reject")
    run_store = _store(store)
    [review] = load_reviews(run_store, run, alpha, evaluator, [problem], unit)
    name = reviewer or getpass.getuser()
    decision = make_decision(review, choose, comment, name, source="cli")
    path = write_decision(run_store, decision)
    what = f"chose {decision.candidate_id}" if choose else "rejected the portfolio"
    if choose and decision.candidate_id != choose:
        what = f"chose answer {choose}, recorded as its representative {decision.candidate_id}"
    typer.echo(f"{problem}: {what} (alpha={alpha:g}); written to {path}")


@review_app.command("list")
def list_command(
    store: str = STORE,
    run: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as one JSON array.")] = False,
) -> None:
    """Decisions made so far, with whether the chosen candidate is correct (where known)."""
    import json

    from optfolio.review import read_decisions

    rows = read_decisions(_store(store), run)
    if as_json:
        typer.echo(json.dumps(rows, default=str, ensure_ascii=False))
        return
    if not rows:
        typer.echo("(no decisions)")
    for row in rows:
        chosen = row["candidate_id"] or "-"
        correct = {None: "unknown", True: "yes", False: "no"}[row["correct"]]
        typer.echo(
            f"{row['run_id']}  {row['problem_id']}  {row['decision']:<8}  {chosen}"
            f"  correct: {correct}  alpha={row['alpha']:g}  by {row['reviewer']}"
            f" ({row['source']}, {row['decided_at']:%Y-%m-%d %H:%M}Z)"
            + (f"  comment: {row['comment']}" if row["comment"] else "")
        )


def register(app: typer.Typer) -> None:
    app.add_typer(review_app)
