"""``optfolio run`` (the main job) and ``optfolio runs``."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from optfolio.settings import default_store_root

STAGES = ("candidates", "executions", "scores", "judgments")


def split_ids(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def run_command(
    dataset: Annotated[str, typer.Option(help="jsonl | nlp4lp | nl4opt | mamo | optibench")] = (
        "jsonl"
    ),
    path: Annotated[
        str | None, typer.Option(help="Dataset file/folder (default: the sample).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N problems.")] = None,
    ids: Annotated[
        str | None, typer.Option(help="Only these problem ids, comma-separated.")
    ] = None,
    candidates: Annotated[int, typer.Option(help="Candidates N sampled per problem.")] = 50,
    eval_samples: Annotated[int, typer.Option(help="Evaluator samples m per candidate.")] = 4,
    judge_samples: Annotated[int, typer.Option(help="Judge samples per candidate (0: none).")] = 1,
    store: Annotated[
        str | None,
        typer.Option(
            help="Store root, a directory or a URI such as file:///shared/store"
            " (default $OPTFOLIO_STORE or ./store)."
        ),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Resume this run (same parameters).")] = None,
    model: Annotated[str | None, typer.Option(help="Model for all three roles.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Endpoint for all roles (default: $OPENAI_BASE_URL, else the local model)."
        ),
    ] = None,
    generator_max_tokens: Annotated[int, typer.Option(help="Token cap per candidate.")] = 1024,
    concurrency: Annotated[int, typer.Option(help="Problems in flight at once.")] = 2,
    timeout: Annotated[float, typer.Option(help="Sandbox wall time per candidate, s.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling, ties and random draws.")] = 0,
    task_runner: Annotated[
        str, typer.Option(help="thread (this process) | dask (Dask workers, see --dask-address).")
    ] = "thread",
    dask_address: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (default: a local Dask cluster for the run)."),
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Show Prefect's task logs too.")] = False,
) -> None:
    """Run the portfolio pipeline on a dataset; prints the summary and where results are."""
    from optfolio.run_config import parse_parameters
    from optfolio.store import new_run_id

    endpoint = {k: v for k, v in {"model": model, "base_url": base_url}.items() if v}
    parameters = parse_parameters(
        dataset=dataset,
        path=path,
        ids=split_ids(ids),
        limit=limit,
        candidates=candidates,
        eval_samples=eval_samples,
        judge_samples=judge_samples,
        store=str(store or default_store_root()),
        run_id=run_id or new_run_id(),
        generator=endpoint,
        evaluator=endpoint,
        judge=endpoint,
        generator_max_tokens=generator_max_tokens,
        concurrency=concurrency,
        task_runner=task_runner,
        dask_address=dask_address,
        sandbox={"timeout_s": timeout},
        seed=seed,
    )  # every value checked before Docker, the model or Prefect start
    from optfolio.datasets import load_problems, sample_dataset_path

    load_problems(
        parameters.dataset,
        parameters.path or sample_dataset_path(),
        limit=parameters.limit,
        ids=parameters.ids,
    )  # bad records: refused now
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.portfolio_run import portfolio_run, task_runner_for

    assert parameters.run_id is not None
    flow = portfolio_run.with_options(task_runner=task_runner_for(parameters))
    with StoreProgress(parameters.store, parameters.run_id, parameters.judge_samples > 0):
        outcome = flow(parameters)
    print_summary(parameters.store, parameters.run_id)
    typer.echo(f"\nrun id:  {outcome['run_id']}")
    typer.echo(f"store:   {outcome['store']}")
    typer.echo(f"results: {Path(str(outcome['store'])) / 'assembled'}")
    typer.echo(
        f'query:   optfolio sql "select * from dataset_summary" --store {outcome["store"]}'
        f" --run {outcome['run_id']}"
    )


class StoreProgress:
    """Progress fed by the run store itself: parts written per stage, one per problem. Bars on
    a terminal; elsewhere (a nightly job's log) a plain line whenever a count changes, since
    rich draws nothing live without a terminal."""

    def __init__(
        self,
        store_root: str | Path,
        run_id: str,
        judging: bool,
        interval_s: float = 1.0,
        terminal: bool | None = None,
    ) -> None:
        self.store_root, self.run_id = store_root, run_id
        self.stages = STAGES if judging else STAGES[:-1]
        self.interval_s = interval_s
        self.terminal = terminal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> StoreProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def counts(self) -> tuple[int | None, dict[str, int]]:
        """(problems in the run, if known yet; parts written per stage)."""
        import pyarrow.parquet as pq

        from optfolio.store import RunStore

        store = RunStore(self.store_root)
        total = None
        if store.has_part("problems", self.run_id, "dataset"):
            path = store.part_path("problems", self.run_id, "dataset")
            total = pq.read_metadata(path).num_rows
        return total, {stage: len(store.parts(stage, self.run_id)) for stage in self.stages}

    def _poll(self) -> None:
        from rich.console import Console

        terminal = Console().is_terminal if self.terminal is None else self.terminal
        (self._draw_bars if terminal else self._print_lines)()

    def _draw_bars(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        ) as progress:
            bars = {stage: progress.add_task(stage, total=None) for stage in self.stages}
            while True:
                total, done = self.counts()
                for stage, bar in bars.items():
                    progress.update(bar, total=total, completed=done[stage])
                if self._stop.wait(self.interval_s):
                    break

    def _print_lines(self) -> None:
        started = time.monotonic()
        last: tuple[int | None, dict[str, int]] | None = None
        while True:
            stopping = self._stop.is_set()  # then one last look, so the final counts show
            current = self.counts()
            if current != last:
                total, done = current
                of = "?" if total is None else str(total)
                stages = "  ".join(f"{stage} {count}/{of}" for stage, count in done.items())
                elapsed = int(time.monotonic() - started)
                typer.echo(f"progress {elapsed // 60}:{elapsed % 60:02d}  {stages}")
                last = current
            if stopping:
                break
            self._stop.wait(self.interval_s)


def print_summary(store_root: str | Path, run_id: str) -> None:
    from optfolio import warehouse
    from optfolio.store import RunStore

    with warehouse.connect(RunStore(store_root), [run_id]) as con:
        frame = con.sql(
            """
            select evaluator, basis, coalesce(cast(alpha as varchar), '') as alpha,
                   coalesce(cast(size as varchar), '') as s, problems,
                   round(mean_portfolio_size, 2) as size,
                   round(mean_portfolio_min_judge, 3) as min_judge,
                   round(mean_random_min_judge, 3) as random_min_judge,
                   round(share_portfolio_holds_correct, 3) as holds_correct,
                   round(share_random_holds_correct, 3) as random_holds_correct,
                   round(mean_pass_at_1, 3) as pass_at_1,
                   round(mean_pass_at_size, 3) as pass_at_s,
                   round(share_majority_vote_correct, 3) as majority
            from dataset_summary
            where basis = 'size' or alpha in (0.1, 0.2, 0.3, 0.5)
            order by evaluator, basis, alpha, size
            """
        ).df()
    typer.echo("\nDataset summary (portfolio vs random candidates of the same size):")
    typer.echo(frame.to_string(index=False) if len(frame) else "(nothing assembled)")


def runs_command(
    store: Annotated[
        str | None,
        typer.Option(
            help="Store root, a directory or a URI such as file:///shared/store"
            " (default $OPTFOLIO_STORE or ./store)."
        ),
    ] = None,
) -> None:
    """List the runs in a store with their progress per stage."""
    from optfolio.errors import InputError
    from optfolio.pipeline import list_runs
    from optfolio.store import RunStore

    run_store = RunStore(store or default_store_root())
    if not run_store.root.is_dir():
        raise InputError(f"--store {run_store.root}: no such directory")
    manifests = list_runs(run_store)
    if not manifests:
        typer.echo("(no runs)")
        return
    for manifest in manifests:
        run = manifest["run_id"]
        counts = "  ".join(f"{t}={len(run_store.parts(t, run))}" for t in ("problems", *STAGES))
        p = manifest["parameters"]
        typer.echo(
            f"{run}  created {manifest['created']}  {p['dataset']} N={p['candidates']}"
            f" m={p['eval_samples']}  parts: {counts}"
        )


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("runs")(runs_command)
