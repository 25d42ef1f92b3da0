"""Prefect tasks, one module per pipeline stage. Each reads and writes Parquet through the run
store and returns small values (paths, counts), never DataFrames."""

from optfolio.settings import apply_prefect_defaults

apply_prefect_defaults()


def retry_transient(task: object, task_run: object, state: object) -> bool:
    """Prefect ``retry_condition_fn``: retry what may pass (an endpoint down, an engine
    restarting), not what cannot pass in seconds: a full disk under the store, bad input,
    a request the endpoint refuses (400, 401). Those fail at once with their own message."""
    from optfolio.errors import InputError
    from optfolio.llm.client import LLMRequestError
    from optfolio.store import StoreFull

    error = getattr(state, "data", None)
    return not isinstance(error, StoreFull | InputError | LLMRequestError)
