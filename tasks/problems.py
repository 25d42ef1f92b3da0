"""Stage: load the dataset into the run's ``problems`` table (validated before anything else)."""

from __future__ import annotations

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.datasets import load_problems, sample_dataset_path
from optfolio.store import RunStore

PART = "dataset"


@task(retries=0, cache_policy=NO_CACHE)
def load_dataset(
    store_root: str,
    run_id: str,
    kind: str,
    path: str | None,
    ids: list[str] | None,
    limit: int | None,
) -> list[str]:
    """Write the selected problems once per run; returns their ids in dataset order."""
    store = RunStore(store_root)
    if store.has_part("problems", run_id, PART):
        problems = pq.read_table(store.part_path("problems", run_id, PART))
    else:
        source = path or str(sample_dataset_path())
        problems = load_problems(kind, source, limit=limit, ids=ids)
        store.write_part("problems", run_id, PART, problems)
    return problems.column("problem_id").to_pylist()
