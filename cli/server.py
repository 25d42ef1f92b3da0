"""``optfolio server up|down|status``: the local Prefect server, worker and deployments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optfolio.errors import ServiceUnavailable
from servers import prefect_services

server_app = typer.Typer(
    name="server",
    help="A Prefect server on loopback with a worker and the deployments (see README).",
    no_args_is_help=True,
)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        help="State directory: PREFECT_HOME, PID files, logs. "
        "Default $OPTFOLIO_SERVER_HOME or ~/.optfolio/server."
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(server_app)


def _echo_status(state: prefect_services.StackStatus) -> None:
    server = f"running (pid {state.server_pid})" if state.server_pid else "not running (by us)"
    typer.echo(f"home:    {state.home}")
    typer.echo(f"server:  {server}, {'healthy' if state.healthy else 'not answering'}")
    if state.port is not None:
        typer.echo(f"API:     {state.api_url}")
        typer.echo(f"UI:      {state.ui_url}")
    for pool, pid in state.workers.items():
        typer.echo(f"worker:  {pool}: {f'running (pid {pid})' if pid else 'not running'}")


@server_app.command("up")
def up_command(
    port: Annotated[int, typer.Option(help="Loopback port for the API and UI.")] = (
        prefect_services.DEFAULT_PORT
    ),
    home: HomeOption = None,
    notify_url: Annotated[
        str | None,
        typer.Option(
            help="Webhook (Slack, or any URL taking a JSON POST) told when a nightly flow run"
            " fails or crashes. Default: the Prefect Variable"
            f" {prefect_services.NOTIFY_URL_VARIABLE}, else the URL set before.",
        ),
    ] = None,
) -> None:
    """Start server, work pool, deployments and worker in the background (idempotent).

    The server listens on 127.0.0.1 only; the deployments come from deployments/prefect.yaml.
    """
    state = prefect_services.up(port=port, home=home, log=typer.echo, notify_url=notify_url)
    _echo_status(state)
    typer.echo(f"stop with: optfolio server down --home {state.home}")


@server_app.command("down")
def down_command(home: HomeOption = None) -> None:
    """Stop the worker(s) and the server started by `up` (by saved PID and process group)."""
    if not prefect_services.down(home=home, log=typer.echo):
        typer.echo("nothing of ours was running")


@server_app.command("status")
def status_command(home: HomeOption = None) -> None:
    """Show what runs; a non-zero exit status when the server does not answer."""
    state = prefect_services.status(home)
    _echo_status(state)
    if not state.healthy:
        raise ServiceUnavailable(f"no optfolio Prefect server answers (home {state.home})")
