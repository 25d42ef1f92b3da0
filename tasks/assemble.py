"""Stage: assemble rankings, portfolios and coverage with the DuckDB SQL of ``sql/``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from optfolio import calibration, warehouse
from optfolio.run_config import PortfolioRunParameters, RunRef
from optfolio.schemas import SIMULATION
from optfolio.simulation import StudyDesign
from optfolio.store import RunStore, check_name, raise_if_full
from tasks import retry_transient

SIMULATION_RESULT = "simulation/part-0.parquet"
# Views materialized for a finished run, read by reports and by people who want files.
# In dependency order: each is written, then read back by the views after it.
RUN_OUTPUTS = (
    "unit_rankings",
    "rankings",
    "answers",
    "unit_portfolio_sizes",
    "portfolio_sizes",
    "portfolios",
    "answer_portfolios",
    "quality",
    "dataset_summary",
)


@task(retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def assemble_simulation(run: RunRef, design: StudyDesign) -> str:
    """Portfolios of every simulated problem on the design's α grid → ``<store>/simulation/``."""
    store = RunStore(run.store)
    settings = warehouse.AssemblySettings(alphas=design.alphas)
    with warehouse.connect(store, [run.run_id], settings) as con:
        result = con.sql("select * from simulation_results").to_arrow_table()
    table = pa.Table.from_arrays(
        [result.column(f.name).cast(f.type) for f in SIMULATION], schema=SIMULATION
    )
    return str(store.write_file(SIMULATION_RESULT, table))


@task(retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def assemble_run(run: RunRef, parameters: PortfolioRunParameters) -> dict[str, str]:
    """Rankings, portfolios and quality of one run → ``<store>/assembled/<view>/run_id=…/``.
    Each view is streamed to its part by DuckDB under ``duckdb_memory_limit``, spilling to a
    hidden directory in the store (a disk, where the system temp may be memory)."""
    store, run_id = RunStore(run.store), run.run_id
    settings = calibration.calibrated_settings(
        warehouse.AssemblySettings.from_parameters(parameters),
        calibration.run_calibration(store, run_id),
    )
    parts = {
        view: store.root / f"assembled/{view}/run_id={check_name('run id', run_id)}/part-0.parquet"
        for view in RUN_OUTPUTS
    }
    try:
        with tempfile.TemporaryDirectory(prefix=".duckdb-spill-", dir=store.root) as spill:
            connection = warehouse.assembly_connection(parameters.duckdb_memory_limit, Path(spill))
            with warehouse.connect(store, [run_id], settings, connection) as con:
                written = warehouse.write_run_views(con, run_id, parts)
    except (OSError, duckdb.Error) as error:  # a full disk while spilling, too
        raise_if_full(error, store.root)
        raise
    return {view: str(path) for view, path in written.items()}
