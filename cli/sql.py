"""``optfolio sql``: run one query over a store's views (see README, "SQL views")."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.options import RunIdsOption, StoreOption, existing_store


def sql_command(
    query: Annotated[str, typer.Argument(help="One SQL query over the store's views.")],
    store: StoreOption = None,
    run: RunIdsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as one JSON array.")] = False,
) -> None:
    """Query problems, candidates, executions, scores, judgments, rankings, portfolios, ..."""
    import duckdb

    from optfolio import warehouse
    from optfolio.errors import InputError

    run_store = existing_store(store)
    with warehouse.connect(run_store, run) as con:
        try:
            frame = con.sql(query).df()
        except duckdb.Error as error:
            raise InputError(f"query failed: {str(error).splitlines()[0]}") from error
    if as_json:
        typer.echo(frame.to_json(orient="records", date_format="iso", force_ascii=False))
    else:
        typer.echo(frame.to_string(index=False) if len(frame) else "(no rows)")


def register(app: typer.Typer) -> None:
    app.command("sql")(sql_command)
