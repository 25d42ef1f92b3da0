"""``optfolio simulate``: the paper's simulated study as a Prefect flow run."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.options import model_command
from optfolio.simulation import SimulationParameters


def simulate(parameters: SimulationParameters) -> None:
    """Run the simulated study: DIR/simulation/ (Parquet) and DIR/figures/ (PNG)."""
    from flows.simulate import simulate as simulate_flow

    outcome = simulate_flow(parameters)  # validated before Prefect starts
    print_summary(Path(str(outcome["results"])))
    typer.echo(f"results: {outcome['results']}")
    for figure in outcome["figures"]:  # type: ignore[attr-defined]
        typer.echo(f"figure:  {figure}")


simulate_command = model_command(SimulationParameters, simulate)


def print_summary(results_path: Path) -> None:
    """Mean coverage and size at a few α, per generator and ε (all K pooled)."""
    import duckdb

    rows = duckdb.sql(
        """
        select generator, evaluator_error as eps, alpha,
               round(avg(coverage), 3) as mean_coverage,
               round(avg(portfolio_size), 2) as mean_size
        from read_parquet(?)
        where alpha in (0.1, 0.3, 0.5)
        group by all order by all
        """,
        params=[str(results_path)],
    ).df()
    typer.echo(rows.to_string(index=False))


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)
