"""``optfolio sandbox ...``: build the image, run a file, check the set-up, manage the engine."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from optfolio.errors import InputError, ServiceUnavailable

sandbox_app = typer.Typer(
    name="sandbox",
    help="The Docker sandbox that runs candidate code (see README, 'Sandbox').",
    no_args_is_help=True,
)
engine_app = typer.Typer(
    name="engine",
    help="Start, stop or show the Docker engine optfolio uses.",
    no_args_is_help=True,
)
sandbox_app.add_typer(engine_app)


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app)


@sandbox_app.command("build")
def build_command(
    force: Annotated[bool, typer.Option(help="Rebuild even if the recipe's tag exists.")] = False,
) -> None:
    """Build the sandbox image (Debian base via mmdebstrap, then sandbox/Dockerfile)."""
    from sandbox import engine, image

    tag = image.build(engine.client(timeout=900), force=force, log=typer.echo)
    typer.echo(tag)


@sandbox_app.command("exec")
def exec_command(
    file: Annotated[Path, typer.Argument(help="The candidate's Python file.")],
    timeout: Annotated[float | None, typer.Option(help="Wall timeout in seconds.")] = None,
    memory: Annotated[int | None, typer.Option(help="Memory limit in MB (no swap).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Run FILE in a fresh sandbox container.

    Exits 0 whenever the sandbox worked, whatever the candidate did (see "status");
    non-zero with one line on stderr when the engine or image is unavailable.
    """
    from sandbox import DEFAULT_LIMITS, Sandbox

    try:
        code = file.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as error:
        raise InputError(f"{file}: {error.strerror}") from error
    changes: dict[str, float | int] = {}
    if timeout is not None:
        changes["timeout_s"] = timeout
    if memory is not None:
        changes["memory_mb"] = memory
    try:
        limits = DEFAULT_LIMITS.with_(**changes)
    except ValueError as error:
        raise InputError(str(error)) from error
    with Sandbox(limits=limits) as box:
        result = box.run(code)
    if as_json:
        typer.echo(result.to_json())
    else:
        typer.echo(result.stdout, nl=False)
        typer.echo(result.stderr, nl=False, err=True)
        objective = "-" if result.objective is None else f"{result.objective:g}"
        runtime = "-" if result.runtime_s is None else f"{result.runtime_s:.2f}s"
        typer.echo(
            f"[{result.status}] exit {result.exit_code}, solver status "
            f"{result.solver_status or '-'}, objective {objective}, {runtime}",
            err=True,
        )
    if result.status == "sandbox_error":
        raise ServiceUnavailable(
            result.stderr.splitlines()[0] if result.stderr else "sandbox error"
        )


@sandbox_app.command("doctor")
def doctor_command() -> None:
    """Check the engine, the image and every limit with small probe programs."""
    from sandbox.doctor import run_checks

    checks = run_checks()
    width = max(len(check.name) for check in checks)
    for check in checks:
        typer.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<{width}}  {check.detail}")
    failed = [check.name for check in checks if not check.ok]
    if failed:
        raise ServiceUnavailable(
            f"sandbox doctor: {len(failed)} check(s) failed: {', '.join(failed)}"
        )


@sandbox_app.command("cleanup")
def cleanup_command() -> None:
    """Remove sandbox containers and job directories left by processes that are gone."""
    from sandbox import cleanup, engine

    typer.echo(f"removed {cleanup.remove_leftovers(engine.client())} container(s)")


@sandbox_app.command(
    "with-engine",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def with_engine_command(
    command: Annotated[list[str], typer.Argument(help="The command to run, after `--`.")],
    build: Annotated[bool, typer.Option(help="Also build the sandbox image if needed.")] = False,
) -> None:
    """Run COMMAND with an engine up: start one if none answers, stop it afterwards if we did.

    Quick when an engine already runs. Exits with COMMAND's exit status.
    """
    from sandbox import engine, image

    with engine.session():
        if build:
            # Importing the base and building take minutes, beyond a normal API timeout.
            image.build(engine.client(timeout=900), log=lambda line: typer.echo(line, err=True))
        process = subprocess.Popen(command)
        # The child gets Ctrl-C from the terminal itself; a SIGTERM to us is passed on.
        previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
        try:
            while True:
                try:
                    returncode = process.wait()
                    break
                except KeyboardInterrupt:
                    continue  # wait for the child to finish its own Ctrl-C handling
        finally:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(returncode)


@engine_app.command("start")
def engine_start() -> None:
    """Start dockerd (installing Debian's docker.io if needed) unless an engine answers."""
    from sandbox import engine

    started = engine.start()
    engine.keep_running()
    status = engine.status()
    verb = "started" if started else "already running"
    typer.echo(f"engine {verb}: {status.host} (Docker {status.server_version})")


@engine_app.command("stop")
def engine_stop() -> None:
    """Stop the dockerd that optfolio started (never one it did not start)."""
    from sandbox import engine

    typer.echo("engine stopped" if engine.stop() else "no engine started by optfolio is running")


@engine_app.command("status")
def engine_status() -> None:
    """Show whether an engine answers, and whether optfolio started it."""
    from sandbox import engine

    status = engine.status()
    if status.answering:
        owner = (
            f"started by optfolio (pid {status.started_pid})"
            if status.started_pid
            else "not started by optfolio"
        )
        version = f"Docker {status.server_version}, API {status.api_version}"
        typer.echo(f"answering: {status.host}, {version}, {owner}")
    else:
        raise ServiceUnavailable(f"no engine answers at {status.host}: {status.detail}")
