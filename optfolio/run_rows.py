"""One problem's rows in a run: reading what an earlier stage wrote, and the usage row a stage
writes beside its part."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from optfolio.errors import InputError
from optfolio.store import RunStore, part_name


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
            "reasked_samples",
        )
    }


def concat_or_empty(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()
