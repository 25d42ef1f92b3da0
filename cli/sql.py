"""``optfolio sql``: run one query over a store's views (see README, "SQL views")."""

from __future__ import annotations

from typing import Annotated

import typer

from optfolio.settings import default_store_root


def sql_command(
    query: Annotated[str, typer.Argument(help="One SQL query over the store's views.")],
    store: Annotated[
        str | None,
        typer.Option(
            help="Store root, a directory or file:// URI (default $OPTFOLIO_STORE or ./store)."
        ),
    ] = None,
    run: Annotated[list[str] | None, typer.Option("--run", help="Only these run ids.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as one JSON array.")] = False,
) -> None:
    """Query problems, candidates, executions, scores, judgments, rankings, portfolios, ..."""
    import duckdb

    from optfolio import warehouse
    from optfolio.errors import InputError
    from optfolio.store import RunStore

    run_store = RunStore(store or default_store_root())
    if not run_store.root.is_dir():
        raise InputError(f"--store {run_store.root}: no such directory")
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
