"""``optfolio run`` (the main job) and ``optfolio runs``."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.options import extra_option, model_command
from optfolio.run_config import PortfolioRunParameters
from optfolio.settings import default_store_root

STAGES = ("candidates", "executions", "scores", "judgments")


# The α rows of the dataset summary printed at the end (the fixed sizes s are always shown).
SUMMARY_ALPHAS = (0.1, 0.2, 0.3, 0.5)


def run(parameters: PortfolioRunParameters, verbose: bool = False) -> None:
    """Run the portfolio pipeline on a dataset; prints the summary and where results are."""
    from optfolio.store import new_run_id

    # Every value was checked (by the model) before Docker, the model or Prefect start.
    parameters = parameters.model_copy(update={"run_id": parameters.run_id or new_run_id()})
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
    from sandbox import engine, image

    # Set-up belongs to the command, not the flow: start Docker and build the sandbox image
    # when needed (the engine is stopped afterwards only if this command started it).
    with (
        engine.session(),
        StoreProgress(parameters.store, parameters.run_id, parameters.judge_samples > 0),
    ):
        image.build(engine.client(timeout=900), log=lambda line: None)
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
    """The run's dataset summary (``run_results.summary_table``) at the fixed sizes s and at
    ``SUMMARY_ALPHAS``, assembled as the run was."""
    from optfolio import run_results
    from optfolio.store import RunStore

    with run_results.connect_run(RunStore(store_root), run_id, SUMMARY_ALPHAS) as con:
        frame = run_results.summary_table(con, SUMMARY_ALPHAS)
    typer.echo("\nDataset summary (portfolio vs random candidates of the same size):")
    if not len(frame):
        typer.echo("(nothing assembled)")
        return
    typer.echo(frame.to_string(index=False, float_format=lambda value: f"{value:.3f}"))


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
    from optfolio.runs import list_runs
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


run_command = model_command(
    PortfolioRunParameters,
    run,
    [extra_option("verbose", bool, False, "Show Prefect's task logs too.")],
)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("runs")(runs_command)
