"""Flow ``portfolio_run``: a dataset of problems in, portfolios of optimization models out.

generation → sandboxed execution → evaluator scoring → judging, per problem, as retryable
tasks that write Parquet; problems overlap (one problem's code runs in Docker while another's
candidates are being written), at most ``concurrency`` problems in flight. Then DuckDB SQL
assembles rankings, portfolios and their quality across the whole dataset. A re-run with the
same run id skips every part already written and pays for no LLM call already answered.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from optfolio.calibration import pin_run_calibration
from optfolio.errors import OptfolioError
from optfolio.run_config import PortfolioRunParameters, ProblemRef, RoleRequest, RunRef
from optfolio.runs import open_run, run_lock
from optfolio.store import RunStore, check_name, new_run_id
from servers.local_model.endpoint import role_endpoints
from tasks._prefect_settings import prepare_endpoints, with_prefect_variables
from tasks.assemble import assemble_run
from tasks.evaluate import evaluate
from tasks.execute import execute
from tasks.figures import draw_run_figures
from tasks.generate import generate
from tasks.judge import judge
from tasks.problems import load_dataset


def require_sandbox() -> None:
    """The Docker engine must answer and the sandbox image exist before any paid call. Set-up
    provides them (`make`, `optfolio sandbox engine start`, `optfolio sandbox build`; `optfolio
    run` does it before the flow); a flow never installs or starts anything, it fails at once
    naming the command to run."""
    from sandbox import engine, image

    image.require_image(engine.client(timeout=60))


def submit_problem(
    p: PortfolioRunParameters, problem: ProblemRef, requests: dict[str, RoleRequest]
) -> list[PrefectFuture]:
    """One problem's chain of stages; returns the futures of all of its stages."""
    limit = p.endpoint_limit  # each LLM request holds a slot of its endpoint's global limit
    generated = generate.submit(problem, requests["generator"], limit)
    executed = execute.submit(problem, p.sandbox, wait_for=[generated])
    scored = evaluate.submit(problem, requests["evaluator"], limit, wait_for=[executed])
    ends = [scored]
    if p.judge_samples > 0:
        ends.append(judge.submit(problem, requests["judge"], limit, wait_for=[executed]))
    # The first stages too: a problem ends when all of them have, and a failure's cause
    # (say, the engine gone during execution) is on the stage that raised it.
    return [generated, executed, *ends]


def task_runner_for(p: PortfolioRunParameters) -> TaskRunner:
    """Threads of this process, or Dask: the scheduler at ``dask_address`` (workers on other
    machines need this project installed, a Docker engine and the store URI), else a local
    cluster for the run."""
    if p.task_runner == "thread":
        return ThreadPoolTaskRunner()
    dask_task_runner = _dask_task_runner_class()
    if p.dask_address:
        return dask_task_runner(address=p.dask_address)
    return dask_task_runner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})


def _dask_task_runner_class() -> type[TaskRunner]:
    """prefect-dask's task runner, imported only when Dask is asked for: it is the `scale`
    extra, not installed with the project itself."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as error:
        raise OptfolioError(
            "task_runner 'dask' needs the scale extra, which is not installed:"
            " pip install 'optfolio[scale]'"
        ) from error
    return DaskTaskRunner


def _runs_on_dask() -> bool:
    """Called only when the run asks for Dask, so a thread run never imports prefect-dask."""
    context = FlowRunContext.get()
    return context is not None and isinstance(context.task_runner, _dask_task_runner_class())


def run_id_from_flow_run() -> str:
    """The run id of the current flow run: ``run-<expected start, UTC>-<8 hex of its id>``.

    A flow run keeps its id and expected start through Prefect's retries and the UI's Retry,
    so a retried run resumes the same run id and pays for nothing twice. (The id's last hex
    digits: its first ones are a UUIDv7 timestamp, shared by runs created within a minute.)
    Outside a flow run: a new id."""
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    if flow_run is None:
        return new_run_id()
    started = flow_run.expected_start_time or flow_run.created
    stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") if started else "unscheduled"
    return check_name("run id", f"run-{stamp}-{flow_run.id.hex[-8:]}")


# Retried once, after a pause for a transient cause (an endpoint or the engine restarting) to
# clear: the retry resumes the same run id, so it redoes only what had not been written.
@flow(name="portfolio_run", log_prints=True, retries=1, retry_delay_seconds=60)
def portfolio_run(parameters: PortfolioRunParameters | None = None) -> dict[str, object]:
    """Generate, execute, evaluate and judge candidates for every problem; assemble portfolios."""
    # Base URL and model defaults from Prefect Variables where the run gives none.
    p = with_prefect_variables(parameters or PortfolioRunParameters())
    run_id = p.run_id or run_id_from_flow_run()
    if p.task_runner == "dask" and not _runs_on_dask():
        # A flow's task runner is fixed where it is defined: a deployment run asking for Dask
        # runs the same flow as a subflow on a Dask task runner (the CLI does that directly),
        # under this flow run's run id; this flow run's retry covers it.
        subflow = portfolio_run.with_options(task_runner=task_runner_for(p), retries=0)
        return subflow(p.model_copy(update={"run_id": run_id}))
    store = RunStore(p.store)
    with run_lock(store, run_id):  # one process per run id at a time
        return _portfolio_run(p, store, run_id)


def _portfolio_run(p: PortfolioRunParameters, store: RunStore, run_id: str) -> dict[str, object]:
    logger = get_run_logger()
    store_root = str(store.root)
    run = RunRef(store=store_root, run_id=run_id)
    open_run(store, run_id, p)
    if p.calibration is not None:  # a missing name fails here, before any paid call
        pin_run_calibration(store, run_id, p.calibration)
    store.remove_temporaries()
    problem_ids = load_dataset(run, p)
    logger.info(
        "run %s: %d problems, N=%d, m=%d", run_id, len(problem_ids), p.candidates, p.eval_samples
    )

    failures: dict[str, str] = {}  # failed problem → the error that failed it
    require_sandbox()
    with role_endpoints(p) as resolved:
        requests = {role: p.role_request(role, e) for role, e in resolved.items()}
        prepare_endpoints(resolved, p.endpoint_limit)  # Secret blocks load; limits exist
        in_flight: dict[str, list[PrefectFuture]] = {}
        ended: set[PrefectFuture] = set()
        for number, problem_id in enumerate(problem_ids, start=1):
            while len(in_flight) >= p.concurrency:  # bounded: at most `concurrency` problems
                # Prefect's wait() has no FIRST_COMPLETED: take the first future to end.
                first = next(
                    as_completed([f for fs in in_flight.values() for f in fs if f not in ended])
                )
                first.wait()  # records its final state for _failure
                ended.add(first)
                for finished_id in [
                    pid for pid, ends in in_flight.items() if all(f in ended for f in ends)
                ]:
                    _note_failure(failures, finished_id, in_flight.pop(finished_id))
            in_flight[problem_id] = submit_problem(p, run.problem(problem_id), requests)
            logger.info("submitted problem %d/%d: %s", number, len(problem_ids), problem_id)
        for problem_id, ends in in_flight.items():
            wait(ends)
            _note_failure(failures, problem_id, ends)

    outputs = assemble_run(run, p)
    figures = draw_run_figures(run)
    if failures:
        raise OptfolioError(
            f"run {run_id}: {len(failures)} of {len(problem_ids)} problems failed"
            f" ({', '.join(list(failures)[:5])}); first error: {next(iter(failures.values()))};"
            f" re-run with run_id={run_id} to resume"
        )
    print(f"run {run_id} done: {Path(outputs['dataset_summary']).parent}")
    return {
        "run_id": run_id,
        "store": store_root,
        "problems": len(problem_ids),
        "outputs": outputs,
        "figures": figures,
    }


def _note_failure(failures: dict[str, str], problem_id: str, ends: list[PrefectFuture]) -> None:
    """If a stage of the problem did not complete, record the error of the one that failed
    (not of the stages that then never ran, "NotReady")."""
    broken = [f for f in ends if not f.state.is_completed()]
    if not broken:
        return
    future = next((f for f in broken if f.state.is_failed()), broken[0])
    try:
        error = future.state.result(raise_on_failure=False)
    except Exception:  # an unfinished state has no result
        error = None
    failures[problem_id] = (
        f"{problem_id}: {type(error).__name__}: {error}"
        if isinstance(error, BaseException)
        else f"{problem_id}: {future.state.message or future.state.name}"
    )
