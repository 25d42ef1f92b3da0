"""``optfolio warehouse``: the store's views in a DuckDB database file, for any SQL tool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import RunIdsOption, StoreOption, existing_store


def warehouse_command(
    out: Annotated[
        Path, typer.Option("--out", help="DuckDB database file to write (replaced if present).")
    ],
    store: StoreOption = None,
    run: RunIdsOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Write a DuckDB file whose views read the store's Parquet (no copies, so runs added later
    appear): open it with the duckdb CLI, Python, a notebook or a BI tool."""
    import json

    from optfolio import warehouse
    from optfolio.errors import InputError

    run_store = existing_store(store)
    target = out.expanduser().absolute()
    if not target.parent.is_dir():
        raise InputError(f"--out {target}: directory {target.parent} does not exist")
    views = warehouse.write_warehouse(run_store, target, run)
    if as_json:
        typer.echo(json.dumps({"out": str(target), "store": str(run_store.root), "views": views}))
    else:
        typer.echo(f"{target}: {len(views)} views over {run_store.root}")


def register(app: typer.Typer) -> None:
    app.command("warehouse")(warehouse_command)
