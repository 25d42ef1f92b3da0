"""The evaluator and judge stages: one LLM role reviews every valid candidate of a problem,
and the stage writes one part (scores or judgments) and its usage row."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from optfolio.llm.cache import ResponseCache
from optfolio.llm.client import LLMClient, RequestSlot
from optfolio.llm.settings import Secret, llm_settings
from optfolio.run_rows import concat_or_empty, problem_rows, usage_row
from optfolio.schemas import JUDGMENTS, LLM_USAGE, SCORES
from optfolio.store import RunStore, part_name

if TYPE_CHECKING:
    from optfolio.run_config import ModelEndpoint

Review = Callable[[LLMClient, dict, dict, "dict | None"], pa.Table]
REVIEW_TABLES = {"evaluator": ("scores", SCORES), "judge": ("judgments", JUDGMENTS)}


def review_problem(
    store: RunStore,
    run_id: str,
    problem_id: str,
    role: str,
    endpoint: ModelEndpoint,
    review: Review,
    *,
    api_key: Secret | None = None,
    request_slot: RequestSlot = contextlib.nullcontext,
) -> Path:
    """Have ``role`` review every valid candidate of one problem and write its part.
    ⊥ has nothing to review (no code): it ranks last under every evaluator anyway.
    ``api_key`` (else ``$OPENAI_API_KEY``) and ``request_slot`` go to the client."""
    table, schema = REVIEW_TABLES[role]
    part = part_name(problem_id)
    if store.has_part(table, run_id, part):
        return store.part_path(table, run_id, part)
    (problem,) = problem_rows(store, "problems", run_id, problem_id)
    candidates = [c for c in problem_rows(store, "candidates", run_id, problem_id) if c["valid"]]
    executions = {
        e["candidate_id"]: e for e in problem_rows(store, "executions", run_id, problem_id)
    }
    settings = llm_settings(endpoint, api_key=api_key)
    cache = ResponseCache.in_store(store.root)
    with (
        LLMClient(settings, cache=cache, request_slot=request_slot) as client,
        ThreadPoolExecutor(max_workers=settings.concurrency) as pool,
    ):
        reviewed = list(
            pool.map(
                lambda c: review(client, problem, c, executions.get(c["candidate_id"])),
                candidates,
            )
        )
        spent = client.usage.snapshot()
    rows = concat_or_empty(reviewed, schema)
    # Their second ask is already in ``requests`` (same client); this says how many it held.
    spent["reasked_samples"] = pc.sum(rows["reasked"]).as_py() or 0
    usage = usage_row(problem_id, role, settings.model, spent)
    store.write_part(
        "llm_usage", run_id, f"{role}-{part}", pa.Table.from_pylist([usage], schema=LLM_USAGE)
    )
    return store.write_part(table, run_id, part, rows)
