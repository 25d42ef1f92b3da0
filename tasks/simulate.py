"""Stage: draw the simulated study's problems (candidates, evaluator scores, designs)."""

from __future__ import annotations

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.run_config import RunRef
from optfolio.simulation import StudyDesign, simulate_problems
from optfolio.store import RunStore

SIMULATED_TABLES = ("candidates", "scores", "sim_configs")


# The store is the cache: a part already written is skipped, across processes and runs.
@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="simulate-K{K}")
def simulate_candidates(run: RunRef, K: int, design: StudyDesign) -> int:
    """Write every simulated problem for one K; returns how many problems the part holds."""
    store, run_id = RunStore(run.store), run.run_id
    part = f"K{K}"
    if all(store.has_part(table, run_id, part) for table in SIMULATED_TABLES):
        return pq.read_metadata(store.part_path("sim_configs", run_id, part)).num_rows
    tables = simulate_problems(K, design)
    for table in SIMULATED_TABLES:
        store.write_part(table, run_id, part, tables[table])
    return tables["sim_configs"].num_rows
