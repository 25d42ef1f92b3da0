"""``optfolio report``: a run's static review page, one HTML file that opens offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optfolio.evaluators import DEFAULT_EVALUATOR, EVALUATORS, evaluator_help
from optfolio.settings import default_store_root


def report_command(
    run: Annotated[str, typer.Option("--run", help="The run id to show.")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    store: Annotated[
        Path | None, typer.Option(help="Store root (default $OPTFOLIO_STORE or ./store).")
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Portfolios at this α: probability mass ≥ 1 − α.")
    ] = 0.5,
    evaluator: Annotated[str, typer.Option(help=evaluator_help())] = DEFAULT_EVALUATOR,
) -> None:
    """Write the review page: each problem's portfolio side by side, the summary, figures."""
    from optfolio.errors import InputError
    from optfolio.report import write_report
    from optfolio.store import RunStore

    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"--alpha {alpha:g}: α must lie in [0, 1]")
    if evaluator not in EVALUATORS:
        raise InputError(f"--evaluator {evaluator!r}: use one of {', '.join(EVALUATORS)}")
    root = store or default_store_root()
    if not root.is_dir():
        raise InputError(f"--store {root}: no such directory")
    written = write_report(RunStore(root), run, out, alpha, evaluator)
    typer.echo(
        f"report: {written.path} ({written.problems} problems, {written.members} portfolio"
        f" members at α = {alpha:g}, {written.figures} figures)"
    )


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
