"""DuckDB over the run store: staging views over the Parquet tables, then the ``sql/`` queries.

Each file in ``sql/`` is one query; it becomes a view named after the file, in the order of
``ASSEMBLY_VIEWS`` (each reads only views defined before it). Parameters (α grid, tie-break
seed, probability method, mass tolerance) are registered as small tables, ``alpha_grid`` and
``run_settings``, which the queries read, and so are the evaluator kinds (``evaluators``):
nothing is formatted into SQL strings.

Two more ways out of the store: :func:`write_warehouse` saves the same views into a DuckDB
database file, over globs of the store's Parquet, for any SQL tool; :func:`copy_to_parquet`
streams a view into a Parquet file inside DuckDB, under the connection's ``memory_limit``.
Both name files in their SQL (a stored view or a ``COPY`` takes no bound parameters): paths
and run ids go in as quoted literals (:func:`quote_literal`), nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from optfolio import calibration
from optfolio.errors import InputError
from optfolio.evaluators import DEFAULT_EVALUATOR, EVALUATORS
from optfolio.parameters import closed_alpha_grid
from optfolio.portfolio import MASS_TOLERANCE, PROBABILITY_METHODS, ProbabilityMethod, check_alpha
from optfolio.quality import CORRECT_REL_TOL, ORLM_REL_TOL
from optfolio.run_config import PortfolioRunParameters
from optfolio.schemas import CALIBRATIONS, RUN_ID, STAGE_TABLES
from optfolio.settings import SQL_DIR
from optfolio.store import RunStore, atomic_path, raise_if_full

# Stage tables appear under their own names, except candidates and decisions: the user-facing
# ``candidates`` view adds the probability p on top of ``stored_candidates``, and
# ``decisions`` adds the chosen candidate's outcome on top of ``stored_decisions``.
STAGING_VIEW_NAMES = {name: name for name in STAGE_TABLES} | {
    "candidates": "stored_candidates",
    "decisions": "stored_decisions",
}


# sql/ files in dependency order; each becomes a view of the same name.
ASSEMBLY_VIEWS: tuple[str, ...] = (
    "candidates",
    "unit_members",
    "unit_rankings",
    "rankings",
    "answers",
    "unit_portfolio_sizes",
    "portfolio_sizes",
    "portfolios",
    "answer_portfolios",
    "portfolio_coverage",
    "simulation_results",
    "candidate_outcomes",
    "unit_outcomes",
    "ranked_outcomes",
    "random_portfolios",
    "random_samples",
    "problem_baselines",
    "quality",
    "dataset_summary",
    "review_members",
    "review_answer_members",
    "conformity_scores",
    "decisions",
    "fixed_size_min_judge",
    "portfolio_correct_coverage",
)


_RUN_DEFAULTS = PortfolioRunParameters()


@dataclass(frozen=True)
class AssemblySettings:
    """What the SQL assembles with. A run's own come from its parameters
    (:meth:`from_parameters`); the defaults (a store without a run manifest) are a run's, on
    the α grid from 0 to 1."""

    alphas: Sequence[float] = field(default_factory=closed_alpha_grid)
    tie_seed: int = _RUN_DEFAULTS.seed
    p_method: ProbabilityMethod = _RUN_DEFAULTS.p_method
    mass_tolerance: float = MASS_TOLERANCE
    sizes: Sequence[int] = tuple(_RUN_DEFAULTS.sizes)  # fixed portfolio sizes s (Fig. 5)
    random_draws: int = _RUN_DEFAULTS.random_draws  # random s-subsets per problem and size
    correct_rel_tol: float = CORRECT_REL_TOL
    orlm_rel_tol: float = ORLM_REL_TOL
    # The run's calibrated α̂ (optfolio calibrate) and what it was calibrated for: flagged
    # in quality and dataset_summary; it must be on the α grid.
    calibrated_alpha: float | None = None
    calibrated_evaluator: str | None = None
    calibrated_unit: str | None = None

    def __post_init__(self) -> None:
        for alpha in self.alphas:
            check_alpha(alpha)
        if not self.alphas:
            raise InputError("the alpha grid is empty")
        if any(not isinstance(s, int) or s < 1 for s in self.sizes):
            raise InputError(f"sizes {list(self.sizes)!r}: portfolio sizes must be integers ≥ 1")
        if self.random_draws < 1:
            raise InputError(f"random_draws={self.random_draws!r}: need at least one draw")
        if self.p_method not in PROBABILITY_METHODS:
            raise InputError(f"p_method {self.p_method!r}: use one of {PROBABILITY_METHODS}")
        if self.calibrated_alpha is not None and self.calibrated_alpha not in self.alphas:
            raise InputError(f"calibrated alpha {self.calibrated_alpha!r} is not on the α grid")

    @classmethod
    def from_parameters(
        cls,
        parameters: PortfolioRunParameters | Mapping[str, Any] | None,
        extra_alphas: Iterable[float] = (),
    ) -> AssemblySettings:
        """The settings a portfolio run assembles with: its α grid (plus EXTRA_ALPHAS), sizes,
        random draws and seed (the tie-break). PARAMETERS may be the run manifest's dump;
        None (no manifest) means the defaults."""
        if parameters is None:
            base = cls()
            alphas, sizes, draws, seed = base.alphas, base.sizes, base.random_draws, base.tie_seed
            p_method = base.p_method
        else:
            if isinstance(parameters, PortfolioRunParameters):
                parameters = parameters.model_dump()
            alphas, sizes = parameters["alphas"], parameters["sizes"]
            draws, seed = parameters["random_draws"], parameters["seed"]
            # manifests from before p_method was a parameter: the method they were built with
            p_method = parameters.get("p_method", _RUN_DEFAULTS.p_method)
        return cls(
            alphas=tuple(sorted({*alphas, *extra_alphas})),
            sizes=tuple(sizes),
            random_draws=draws,
            tie_seed=seed,
            p_method=p_method,
        )


def read_sql(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise InputError(f"no SQL file {path}")
    return path.read_text()


def connect(
    store: RunStore,
    run_ids: Iterable[str] | None = None,
    settings: AssemblySettings | None = None,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with every stage table and assembled view over ``store``."""
    con = connection or duckdb.connect()
    settings = settings or AssemblySettings()
    wanted = None if run_ids is None else sorted(set(run_ids))
    for table, view in STAGING_VIEW_NAMES.items():
        register_stage_table(con, store, table, view, wanted)
    register_parameters(con, settings)
    calibration.register_calibrations(con, store)
    for name in ASSEMBLY_VIEWS:
        con.execute(f"create or replace view {name} as {read_sql(name)}")
    return con


def register_stage_table(
    con: duckdb.DuckDBPyConnection,
    store: RunStore,
    table: str,
    view: str,
    run_ids: Sequence[str] | None,
) -> None:
    runs = store.runs(table) if run_ids is None else [r for r in run_ids if store.parts(table, r)]
    files = [
        str(store.part_path(table, run, part)) for run in runs for part in store.parts(table, run)
    ]
    drop_relation(con, view)
    if files:
        relation = con.read_parquet(files, hive_partitioning=True, union_by_name=True)
        relation.create_view(view, replace=True)
    else:
        empty = STAGE_TABLES[table].append(pa.field(RUN_ID, pa.string())).empty_table()
        create_table_from_arrow(con, view, empty)


def register_parameters(con: duckdb.DuckDBPyConnection, settings: AssemblySettings) -> None:
    alpha_grid = pa.table({"alpha": pa.array(list(settings.alphas), pa.float64())})
    run_settings = pa.table(
        {
            "tie_seed": pa.array([settings.tie_seed], pa.int64()),
            "p_method": pa.array([settings.p_method], pa.string()),
            "mass_tolerance": pa.array([settings.mass_tolerance], pa.float64()),
            "random_draws": pa.array([settings.random_draws], pa.int64()),
            "correct_rel_tol": pa.array([settings.correct_rel_tol], pa.float64()),
            "orlm_rel_tol": pa.array([settings.orlm_rel_tol], pa.float64()),
            "calibrated_alpha": pa.array([settings.calibrated_alpha], pa.float64()),
            "calibrated_evaluator": pa.array([settings.calibrated_evaluator], pa.string()),
            "calibrated_unit": pa.array([settings.calibrated_unit], pa.string()),
        }
    )
    size_grid = pa.table({"s": pa.array(sorted(set(settings.sizes)), pa.int64())})
    create_table_from_arrow(con, "size_grid", size_grid)
    create_table_from_arrow(con, "evaluators", evaluators_table())
    create_table_from_arrow(con, "alpha_grid", alpha_grid)
    create_table_from_arrow(con, "run_settings", run_settings)


def evaluators_table() -> pa.Table:
    """The registered evaluator kinds (``optfolio.evaluators``) and the source each ranks by:
    ``sql/rankings.sql`` ranks candidates once per row."""
    kinds = list(EVALUATORS.values())
    return pa.table(
        {
            "evaluator": pa.array([kind.name for kind in kinds], pa.string()),
            "ranked_by": pa.array([kind.ranked_by for kind in kinds], pa.string()),
            "is_default": pa.array([kind.name == DEFAULT_EVALUATOR for kind in kinds], pa.bool_()),
        }
    )


def create_table_from_arrow(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table) -> None:
    """Copy ``data`` into DuckDB (a view over a Python object would dangle once it is freed)."""
    drop_relation(con, name)
    con.register("_incoming_arrow", data)
    try:
        con.execute(f"create or replace table {name} as select * from _incoming_arrow")
    finally:
        con.unregister("_incoming_arrow")


def drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a view or table of that name, whichever it is (re-connecting replaces both)."""
    found = con.execute(
        "select table_type from information_schema.tables where table_name = ?", [name]
    ).fetchone()
    if found:
        con.execute(f"drop {'view' if found[0] == 'VIEW' else 'table'} {name}")


# ---- streaming a view to Parquet -----------------------------------------------------------

# DuckDB types whose Parquet form is not their Arrow form: COPY would write HUGEINT (a sum of
# integers) as DOUBLE, where the Arrow path gave decimal128(38, 0).
PARQUET_CASTS = {"HUGEINT": "DECIMAL(38, 0)", "UHUGEINT": "DECIMAL(38, 0)"}


def assembly_connection(memory_limit: str, spill_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that keeps within MEMORY_LIMIT (e.g. ``512MB``), spilling the
    rest to files in SPILL_DIR."""
    config = {"memory_limit": memory_limit.replace(" ", ""), "temp_directory": str(spill_dir)}
    con = duckdb.connect(config=config)
    con.execute("set enable_progress_bar = false")  # a task's output is its log, not a terminal
    return con


def copy_to_parquet(con: duckdb.DuckDBPyConnection, query: str, final: Path) -> Path:
    """Write the rows of QUERY to FINAL with DuckDB's ``COPY ... TO`` (streamed, never held in
    Python), atomically: a temporary file beside FINAL, renamed once complete."""
    relation = con.sql(query)
    columns = ", ".join(
        f"{parquet_column(quote_name(name), str(kind))} as {quote_name(name)}"
        for name, kind in zip(relation.columns, relation.types, strict=True)
    )
    with atomic_path(final) as temp:
        try:
            con.execute(
                f"copy (select {columns} from ({query})) to {quote_literal(str(temp))}"
                " (format parquet, compression zstd)"
            )
        except duckdb.Error as error:
            raise_if_full(error, final)  # a full disk: the store's own one-line error
            raise
    return final


def write_run_views(
    con: duckdb.DuckDBPyConnection, run_id: str, parts: Mapping[str, Path]
) -> dict[str, Path]:
    """Each view of PARTS (view → file, in order) streamed to its Parquet file without its
    ``run_id`` column (the path holds it). A view once written is read back from its file,
    with the same columns and types: a later view built on it does not compute it again."""
    written = {}
    for view, final in parts.items():
        relation = con.sql(f"select * from {view}")
        names, kinds = relation.columns, [str(kind) for kind in relation.types]
        written[view] = copy_to_parquet(con, f"select * exclude ({RUN_ID}) from {view}", final)
        columns = ", ".join(
            f"{quote_literal(run_id) if name == RUN_ID else quote_name(name)}::{kind}"
            f" as {quote_name(name)}"
            for name, kind in zip(names, kinds, strict=True)
        )
        con.execute(
            f"create or replace view {view} as"
            f" select {columns} from read_parquet({quote_literal(str(final))})"
        )
    return written


def parquet_column(column: str, kind: str) -> str:
    """COLUMN as written to Parquet: typed as the Arrow path typed it, and nullable. DuckDB
    marks a column REQUIRED when its statistics show no null, so without ``try`` the
    schema would change with the data of a run."""
    cast = f"::{PARQUET_CASTS[kind]}" if kind in PARQUET_CASTS else ""
    return f"try({column}{cast})"


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---- the store as a DuckDB database file -------------------------------------------------

# An empty Parquet file with a stage table's schema, hidden in the table's directory: the view
# over ``<table>/**/*.parquet`` then has its columns before any run writes a part (DuckDB
# refuses a glob that matches nothing), and a run's first part appears without rebuilding.
SCHEMA_ANCHOR = ".schema.parquet"
# The run a part belongs to, from its path ``…/<table>/run_id=<run>/<part>.parquet``.
RUN_OF_FILE = rf"regexp_extract(filename, '/{RUN_ID}=([^/]+)/[^/]+$', 1)"


def write_warehouse(
    store: RunStore,
    out: Path,
    run_ids: Iterable[str] | None = None,
    settings: AssemblySettings | None = None,
) -> list[str]:
    """A DuckDB database file at OUT holding every staging and assembled view as a view over
    the store's Parquet (no copies: runs written later appear in it). Written atomically; an
    existing file is replaced. Returns the view names."""
    out = Path(out).expanduser().absolute()
    if out.is_dir():
        raise InputError(f"warehouse file {out} is a directory")
    if not out.parent.is_dir():
        raise InputError(f"warehouse file {out}: directory {out.parent} does not exist")
    wanted = None if run_ids is None else sorted(set(run_ids))
    for table in STAGING_VIEW_NAMES:
        write_schema_anchor(store, table)
    with atomic_path(out) as temp:
        try:
            with duckdb.connect(str(temp)) as con:
                for table, view in STAGING_VIEW_NAMES.items():
                    con.execute(f"create view {view} as {stage_view_sql(store, table, wanted)}")
                register_parameters(con, settings or AssemblySettings())
                con.execute(f"create view calibrations as {calibrations_view_sql(store)}")
                for name in ASSEMBLY_VIEWS:
                    con.execute(f"create view {name} as {read_sql(name)}")
        finally:
            temp.with_name(f"{temp.name}.wal").unlink(missing_ok=True)
    return [*STAGING_VIEW_NAMES.values(), "calibrations", *ASSEMBLY_VIEWS]


def calibrations_view_sql(store: RunStore) -> str:
    """Every stored calibration, read when queried; a hidden empty anchor file gives the
    schema while there is none (DuckDB refuses a glob that matches nothing)."""
    anchor = f"{calibration.CALIBRATIONS_DIR}/{SCHEMA_ANCHOR}"
    if not (store.root / anchor).is_file():
        store.write_file(anchor, CALIBRATIONS.empty_table())
    pattern = quote_literal(str(calibration.calibrations_dir(store) / "*.parquet"))
    return f"select * from read_parquet({pattern}, union_by_name = true)"


def write_schema_anchor(store: RunStore, table: str) -> None:
    """The table's :data:`SCHEMA_ANCHOR`, (re)written unless it already holds the schema."""
    schema = STAGE_TABLES[table]
    path = store.table_dir(table) / SCHEMA_ANCHOR
    if not (path.is_file() and pq.read_schema(path).equals(schema)):
        store.write_file(f"{table}/{SCHEMA_ANCHOR}", schema.empty_table())


def stage_view_sql(store: RunStore, table: str, run_ids: Sequence[str] | None) -> str:
    """A stage table across runs (or only RUN_IDS), with ``run_id`` from each part's path.
    The glob ends in ``.parquet``, so a writer's temporary ``.<part>.parquet.tmp-…`` is
    never read."""
    pattern = quote_literal(str(store.table_dir(table) / "**" / "*.parquet"))
    query = (
        f"select * exclude (filename), {RUN_OF_FILE} as {RUN_ID} from read_parquet({pattern},"
        " union_by_name = true, filename = true, hive_partitioning = false)"
    )
    if run_ids is None:
        return query
    listed = ", ".join(quote_literal(run) for run in run_ids) or "null"
    return f"select * from ({query}) where {RUN_ID} in ({listed})"
