"""The ``optfolio`` command line.

Each command group lives in its own module and is registered here. Commands that run flows
import Prefect lazily, inside the command, so ``import optfolio`` stays Prefect-free.
"""

from __future__ import annotations

import importlib
import sys

import typer

from cli import shutdown
from optfolio.errors import OptfolioError

app = typer.Typer(
    name="optfolio",
    help="Robust portfolios of LLM-generated optimization models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Each command module adds its commands to ``app``; one line per module.
    from cli import sandbox, simulate, sql

    simulate.register(app)
    sql.register(app)
    sandbox.register(app)
    importlib.import_module("cli.models").register(app)
    importlib.import_module("cli.server").register(app)
    importlib.import_module("cli.run").register(app)
    importlib.import_module("cli.report").register(app)
    importlib.import_module("cli.review").register(app)
    importlib.import_module("cli.warehouse").register(app)
    importlib.import_module("cli.calibrate").register(app)


_register()


def main() -> None:
    """Entry point: known errors become one line on stderr and exit status 2."""
    # SystemExit unwinds every ``with`` (the local model server, Docker engine leases, sandbox
    # containers), with a deadline for threads that would hold the exit (cli/shutdown.py).
    shutdown.install()
    try:
        app(standalone_mode=False)
    except OptfolioError as error:
        print(f"optfolio: error: {error}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("optfolio: aborted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as error:  # click usage errors and the like
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
