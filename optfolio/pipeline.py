"""The pieces of a portfolio run that are not orchestration: run manifests (resume safely),
resolving model endpoints for the three roles, and reading one problem's rows.

Prefect-free: ``tasks/`` and ``flows/`` call these.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from optfolio.errors import InputError, OptfolioError
from optfolio.llm.cache import ResponseCache
from optfolio.llm.client import LLMClient
from optfolio.llm.settings import LLMSettings
from optfolio.run_config import ModelEndpoint, PortfolioRunParameters
from optfolio.schemas import JUDGMENTS, LLM_USAGE, SCORES
from optfolio.store import RunStore, atomic_path, check_name, part_name, raise_if_full

ROLES = ("generator", "evaluator", "judge")
MANIFEST = "manifest.json"


def manifest_path(store: RunStore, run_id: str) -> Path:
    return store.root / "runs" / f"run_id={check_name('run id', run_id)}" / MANIFEST


def open_run(store: RunStore, run_id: str, parameters: PortfolioRunParameters) -> dict[str, Any]:
    """Record the run's parameters, or check that a resumed run asks for the same work."""
    path = manifest_path(store, run_id)
    fingerprint = parameters.fingerprint()
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest["fingerprint"] != fingerprint:
            raise InputError(
                f"run {run_id!r} exists with other parameters (see {path}); resume it with the"
                " same parameters or choose a new --run-id"
            )
        return manifest
    manifest = {
        "run_id": run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        "parameters": parameters.model_dump(mode="json"),
    }
    write_json_atomically(path, manifest)
    return manifest


class RunInProgress(OptfolioError):
    """Another process is running this run id now; two writers of one run would do (and pay
    for) the same work twice."""


@contextlib.contextmanager
def run_lock(store: RunStore, run_id: str) -> Iterator[Path]:
    """Hold ``<store>/runs/run_id=<id>/lock`` (``flock``) while the run works; a second
    process asking for the same run id is refused at once. The kernel drops the lock when
    its process dies, even by SIGKILL, so a killed run can be resumed immediately. (Runs
    with different ids share a store freely: their parts never collide and the response
    cache takes concurrent writers.)"""
    path = manifest_path(store, run_id).with_name("lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
    except OSError as error:
        raise_if_full(error, path)
        raise
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise RunInProgress(
                f"run {run_id!r} is already running (process {holder}; lock {path}): wait"
                " for it to end, or choose another --run-id"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def list_runs(store: RunStore) -> list[dict[str, Any]]:
    runs_dir = store.root / "runs"
    manifests = sorted(runs_dir.glob(f"run_id=*/{MANIFEST}")) if runs_dir.is_dir() else []
    return [json.loads(path.read_text()) for path in manifests]


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


# ---- endpoints ---------------------------------------------------------------------------


@contextlib.contextmanager
def role_endpoints(parameters: PortfolioRunParameters) -> Iterator[dict[str, ModelEndpoint]]:
    """Concrete endpoints for the three roles. Roles with neither a base URL nor
    ``$OPENAI_BASE_URL`` share one embedded local server, started here and stopped after."""
    from optfolio.llm.local import local_endpoint

    configured = {role: getattr(parameters, role) for role in ROLES}
    environment_url = os.environ.get("OPENAI_BASE_URL") or None
    local_roles = [r for r, e in configured.items() if not (e.base_url or environment_url)]
    resolved = {
        role: ModelEndpoint(model=e.model, base_url=e.base_url or environment_url)
        for role, e in configured.items()
    }
    if not local_roles:
        yield resolved
        return
    models = list(dict.fromkeys(configured[r].model for r in local_roles))
    with local_endpoint(LLMSettings(model=models[0]), models=models) as local:
        for role in local_roles:
            # CPU decoding of n long answers takes many minutes: the local settings' timeout
            resolved[role] = ModelEndpoint(
                model=configured[role].model,
                base_url=local.base_url,
                timeout_s=configured[role].timeout_s or local.timeout_s,
            )
        yield resolved


def llm_settings(endpoint: ModelEndpoint | dict[str, Any]) -> LLMSettings:
    """Client settings for a resolved endpoint; the API key comes from the environment only."""
    if isinstance(endpoint, dict):
        endpoint = ModelEndpoint(**endpoint)
    if endpoint.base_url is None:
        raise InputError(f"model {endpoint.model!r} has no endpoint: resolve it first")
    overrides = {"timeout_s": endpoint.timeout_s} if endpoint.timeout_s else {}
    return LLMSettings.from_env(model=endpoint.model, base_url=endpoint.base_url, **overrides)


# ---- reading one problem's rows ----------------------------------------------------------


def problem_rows(store: RunStore, table: str, run_id: str, problem_id: str) -> list[dict]:
    """Rows of ``table`` written for one problem (its part), or of the problems table."""
    if table == "problems":
        data = store.read("problems", [run_id])
        return data.filter(pc.equal(data["problem_id"], problem_id)).to_pylist()
    path = store.part_path(table, run_id, part_name(problem_id))
    if not path.is_file():
        raise InputError(f"run {run_id!r}: no {table} written yet for problem {problem_id!r}")
    return pq.read_table(path).to_pylist()


def usage_row(problem_id: str, role: str, model: str, usage: dict[str, int]) -> dict[str, Any]:
    return {"problem_id": problem_id, "role": role, "model": model} | {
        key: usage.get(key, 0)
        for key in (
            "requests",
            "retries",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "cache_hits",
            "samples",
        )
    }


def concat_or_empty(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


# ---- the evaluator and the judge ---------------------------------------------------------

Review = Callable[[LLMClient, dict, dict, "dict | None"], pa.Table]
REVIEW_TABLES = {"evaluator": ("scores", SCORES), "judge": ("judgments", JUDGMENTS)}


def review_problem(
    store: RunStore, run_id: str, problem_id: str, role: str, endpoint: dict, review: Review
) -> Path:
    """Have ``role`` review every valid candidate of one problem and write its part.
    ⊥ has nothing to review (no code): it ranks last under every evaluator anyway."""
    table, schema = REVIEW_TABLES[role]
    part = part_name(problem_id)
    if store.has_part(table, run_id, part):
        return store.part_path(table, run_id, part)
    (problem,) = problem_rows(store, "problems", run_id, problem_id)
    candidates = [c for c in problem_rows(store, "candidates", run_id, problem_id) if c["valid"]]
    executions = {
        e["candidate_id"]: e for e in problem_rows(store, "executions", run_id, problem_id)
    }
    settings = llm_settings(endpoint)
    with (
        LLMClient(settings, cache=ResponseCache.in_store(store.root)) as client,
        ThreadPoolExecutor(max_workers=settings.concurrency) as pool,
    ):
        reviewed = list(
            pool.map(
                lambda c: review(client, problem, c, executions.get(c["candidate_id"])),
                candidates,
            )
        )
        usage = usage_row(problem_id, role, settings.model, client.usage.snapshot())
    store.write_part(
        "llm_usage", run_id, f"{role}-{part}", pa.Table.from_pylist([usage], schema=LLM_USAGE)
    )
    return store.write_part(table, run_id, part, concat_or_empty(reviewed, schema))
