"""Stage: load the dataset (or the problems given inline) into the run's ``problems`` table,
validated before anything else."""

from __future__ import annotations

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio.datasets import select_problems
from optfolio.run_config import PortfolioRunParameters, RunRef
from optfolio.store import RunStore

PART = "dataset"


@task(retries=0, cache_policy=NO_CACHE)
def load_dataset(run: RunRef, parameters: PortfolioRunParameters) -> list[str]:
    """Write the problems the parameters select (inline problems, or dataset and path; ids,
    limit) once per run; returns their ids in dataset order."""
    store, run_id, p = RunStore(run.store), run.run_id, parameters
    if store.has_part("problems", run_id, PART):
        problems = pq.read_table(store.part_path("problems", run_id, PART))
    else:
        inline = None if p.problems is None else [problem.model_dump() for problem in p.problems]
        problems = select_problems(p.dataset, p.path, inline, limit=p.limit, ids=p.ids)
        store.write_part("problems", run_id, PART, problems)
    return problems.column("problem_id").to_pylist()
