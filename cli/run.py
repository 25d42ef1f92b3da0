"""``optfolio run`` (the main job) and ``optfolio runs``."""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.options import existing_store, extra_option, model_command
from optfolio.errors import InputError
from optfolio.parameters import parse_model
from optfolio.run_config import PortfolioRunParameters

STAGES = ("candidates", "executions", "scores", "judgments")


# The α rows of the dataset summary printed at the end (the fixed sizes s are always shown).
SUMMARY_ALPHAS = (0.1, 0.2, 0.3, 0.5)


def run(
    parameters: PortfolioRunParameters,
    verbose: bool = False,
    problem: str | None = None,
    problem_file: Path | None = None,
    objective: float | None = None,
    problem_id: str | None = None,
    context: typer.Context | None = None,
) -> None:
    """Run the portfolio pipeline on a dataset, or on one problem given by --problem or
    --problem-file; prints the summary and where results are."""
    from optfolio.store import new_run_id

    dataset_given = context is not None and _given(context, "dataset")
    parameters = with_problem_given(
        parameters, problem, problem_file, objective, problem_id, dataset_given
    )
    # Every value was checked (by the model) before Docker, the model or Prefect start.
    parameters = parameters.model_copy(update={"run_id": parameters.run_id or new_run_id()})
    from optfolio.datasets import select_problems

    inline = parameters.problems
    select_problems(
        parameters.dataset,
        parameters.path,
        None if inline is None else [problem.model_dump() for problem in inline],
        limit=parameters.limit,
        ids=parameters.ids,
    )  # bad records: refused now
    if parameters.calibration is not None:  # a missing calibration too, before Docker starts
        from optfolio.calibration import load_calibration
        from optfolio.store import RunStore

        load_calibration(RunStore(parameters.store), parameters.calibration)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.portfolio_run import portfolio_run, task_runner_for

    assert parameters.run_id is not None
    # No flow retry here (deployments retry once): the command ends with the error and the
    # re-run that resumes, at once, instead of redoing a failed run a minute later unasked.
    flow = portfolio_run.with_options(task_runner=task_runner_for(parameters), retries=0)
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


def with_problem_given(
    parameters: PortfolioRunParameters,
    text: str | None,
    file: Path | None,
    objective: float | None,
    problem_id: str | None,
    dataset_given: bool = False,
) -> PortfolioRunParameters:
    """PARAMETERS with the one problem of --problem TEXT or --problem-file FILE as their inline
    ``problems``; unchanged when neither is given. DATASET_GIVEN: --dataset was typed."""
    flag = "--problem" if file is None else "--problem-file"
    if text is None and file is None:
        for given, option in ((objective, "--objective"), (problem_id, "--problem-id")):
            if given is not None:
                raise InputError(f"{option} needs --problem or --problem-file")
        return parameters
    if text is not None and file is not None:
        raise InputError("--problem and --problem-file are exclusive: give the text once")
    if parameters.path is not None or dataset_given:
        option = "--path" if parameters.path is not None else "--dataset"
        raise InputError(f"{flag} and {option} are exclusive: the problem replaces the dataset")
    if file is not None:
        from optfolio.datasets.validation import read_text

        try:
            text = read_text(file)
        except InputError as error:
            raise InputError(f"--problem-file {error}") from None
    assert text is not None
    default_id = _safe_id(file.stem) if file is not None else ""
    problem = {
        "id": problem_id or default_id or text_problem_id(text),
        "description": text.strip(),  # as loaded: a final newline must not change the run
        "objective": objective,
    }
    return parse_model(PortfolioRunParameters, {**parameters.model_dump(), "problems": [problem]})


def text_problem_id(text: str) -> str:
    """The id of a problem given by its text alone: the same text, the same id, so a run given
    it again (same --run-id) resumes rather than starts over."""
    return f"problem-{hashlib.sha256(text.strip().encode()).hexdigest()[:8]}"


def _safe_id(name: str) -> str:
    """NAME as a problem id the store accepts ("" when nothing of it is usable)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("._-")[:128]


def _given(context: typer.Context, name: str) -> bool:
    """Whether option NAME was given (command line or environment), not left at its default."""
    source = context.get_parameter_source(name)
    return source is not None and source.name not in {"DEFAULT", "DEFAULT_MAP"}


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
    from optfolio.runs import list_runs

    run_store = existing_store(store)
    manifests = list_runs(run_store)
    if not manifests:
        typer.echo("(no runs)")
        return
    for manifest in manifests:
        run = manifest["run_id"]
        counts = "  ".join(f"{t}={len(run_store.parts(t, run))}" for t in ("problems", *STAGES))
        p = manifest["parameters"]
        dataset = "inline" if p.get("problems") else p["dataset"]
        typer.echo(
            f"{run}  created {manifest['created']}  {dataset} N={p['candidates']}"
            f" m={p['eval_samples']}  parts: {counts}"
        )


run_command = model_command(
    PortfolioRunParameters,
    run,
    [
        extra_option("verbose", bool, False, "Show Prefect's task logs too."),
        extra_option(
            "problem",
            str | None,
            None,
            "One problem's text, run instead of a dataset (its id: problem-<hash of the text>).",
        ),
        extra_option(
            "problem_file",
            Path | None,
            None,
            "A text file holding one problem, run instead of a dataset (its id: the file's"
            " name without extension).",
        ),
        extra_option(
            "objective",
            float | None,
            None,
            "Known optimal objective of --problem / --problem-file (enables judging).",
        ),
        extra_option("problem_id", str | None, None, "Id of --problem / --problem-file."),
        # Typer hands a parameter of this type the command's context (which options were typed).
        inspect.Parameter("context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    ],
)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("runs")(runs_command)
