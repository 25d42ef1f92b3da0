"""The store as a DuckDB database file (``optfolio warehouse``) and assembly streamed by DuckDB.

Stores are synthetic finished runs (tests/plugins/run_fixtures.py): no LLM, no Docker. The
warehouse file is opened by the ``duckdb`` package in a fresh Python process, as a notebook
would open it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optfolio import warehouse
from optfolio.run_config import PortfolioRunParameters, RunRef
from optfolio.run_results import assembly_settings
from optfolio.schemas import DECISIONS, RUN_ID, STAGE_TABLES
from optfolio.store import RunStore
from tasks.assemble import RUN_OUTPUTS, assemble_run
from tests.plugins.run_fixtures import build_finished_run

CLI = Path(sys.executable).with_name("optfolio")
SUMMARY = "select * from dataset_summary order by all"
EVERY_VIEW = {*warehouse.STAGING_VIEW_NAMES.values(), "calibrations", *warehouse.ASSEMBLY_VIEWS}
PARAMETER_TABLES = {"alpha_grid", "run_settings", "size_grid", "evaluators"}

# Run in a fresh interpreter: what the file holds and what a query over it gives.
READER = """
import duckdb, json, sys
con = duckdb.connect(sys.argv[1], read_only=True)
relations = con.execute("select table_name, table_type from information_schema.tables").fetchall()
frame = con.sql(sys.argv[2]).df()
print(json.dumps({
    "relations": relations,
    "rows": json.loads(frame.to_json(orient="records", date_format="iso", force_ascii=False)),
}))
"""


def optfolio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300)


def read_in_fresh_process(database: Path, query: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", READER, str(database), query],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def write_warehouse(store: RunStore, out: Path) -> dict:
    done = optfolio("warehouse", "--store", str(store.root), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sql_rows(store: RunStore, query: str) -> list[dict]:
    done = optfolio("sql", "--store", str(store.root), "--json", query)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_warehouse_file_holds_every_view_and_answers_as_optfolio_sql(tmp_path: Path) -> None:
    store, _ = build_finished_run(tmp_path / "store")
    out = tmp_path / "optfolio.duckdb"
    printed = write_warehouse(store, out)
    assert printed["out"] == str(out) and set(printed["views"]) == EVERY_VIEW

    seen = read_in_fresh_process(out, SUMMARY)
    relations = dict(seen["relations"])
    assert {name for name, kind in relations.items() if kind == "VIEW"} == EVERY_VIEW
    assert set(relations) >= PARAMETER_TABLES
    expected = sql_rows(store, SUMMARY)
    assert len(expected) > 0
    assert seen["rows"] == expected
    # Views, not copies: the file stays small whatever the store holds.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # Every view has the columns and types it has in `optfolio sql`, the empty tables too.
    fresh = duckdb.connect(str(out), read_only=True)
    with warehouse.connect(store) as reference:
        for view in sorted(EVERY_VIEW):
            query = f"select * from {view}"
            mine, theirs = fresh.sql(query), reference.sql(query)
            assert (mine.columns, mine.types) == (theirs.columns, theirs.types), view
    empty = fresh.sql("select * from sim_configs")
    assert empty.columns == [*STAGE_TABLES["sim_configs"].names, RUN_ID]
    assert fresh.execute("select count(*) from sim_configs").fetchall() == [(0,)]
    fresh.close()


def test_runs_and_decisions_written_later_appear_without_rewriting(tmp_path: Path) -> None:
    store, first = build_finished_run(tmp_path / "store")
    out = tmp_path / "optfolio.duckdb"
    write_warehouse(store, out)
    written_once = out.stat().st_mtime_ns

    _, second = build_finished_run(store.root, run_id="second-run")
    decided = {
        "problem_id": "furniture",
        "alpha": 0.5,
        "evaluator": "llm",
        "decision": "rejected",
        "candidate_id": None,
        "comment": "none fits",
        "reviewer": "test",
        "decided_at": datetime.now(UTC),
        "source": "cli",
    }
    # Decisions had no part when the file was written: their first one appears all the same.
    store.write_part("decisions", second, "furniture", pa.Table.from_pylist([decided], DECISIONS))

    runs = read_in_fresh_process(
        out, "select run_id, count(*) as problems from problems group by run_id order by run_id"
    )["rows"]
    assert runs == [{"run_id": second, "problems": 4}, {"run_id": first, "problems": 4}]
    decisions = read_in_fresh_process(out, "select run_id, decision from stored_decisions")["rows"]
    assert decisions == [{"run_id": second, "decision": "rejected"}]
    assert read_in_fresh_process(out, SUMMARY)["rows"] == sql_rows(store, SUMMARY)
    assert out.stat().st_mtime_ns == written_once


def test_a_warehouse_of_some_runs_shows_only_those(tmp_path: Path) -> None:
    store, first = build_finished_run(tmp_path / "store")
    build_finished_run(store.root, run_id="second-run")
    out = tmp_path / "first.duckdb"
    done = optfolio("warehouse", "--store", str(store.root), "--out", str(out), "--run", first)
    assert done.returncode == 0, done.stderr
    rows = read_in_fresh_process(out, "select distinct run_id from quality")["rows"]
    assert rows == [{"run_id": first}]
    # Writing again replaces the file: now with every run.
    write_warehouse(store, out)
    rows = read_in_fresh_process(out, "select distinct run_id from quality order by 1")["rows"]
    assert rows == [{"run_id": "second-run"}, {"run_id": first}]


def test_an_out_in_a_missing_directory_is_refused_naming_it(tmp_path: Path) -> None:
    store, _ = build_finished_run(tmp_path / "store")
    missing = tmp_path / "no such dir"
    done = optfolio("warehouse", "--store", str(store.root), "--out", str(missing / "w.duckdb"))
    assert done.returncode == 2
    assert f"directory {missing} does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not missing.exists()


# ---- assembly streamed by DuckDB ---------------------------------------------------------


def materialized_view(store: RunStore, run_id: str, view: str) -> pa.Table:
    """A view as assembly wrote it before streaming: fetched into Arrow, run_id dropped."""
    with warehouse.connect(store, [run_id], assembly_settings(store, run_id)) as con:
        return con.sql(f"select * from {view}").to_arrow_table().drop_columns([RUN_ID])


def sorted_rows(table: pa.Table) -> list[tuple]:
    # Floats to 12 places: DuckDB's parallel averages differ in the last bits run to run.
    return sorted(
        tuple(repr(round(v, 12) if isinstance(v, float) else v) for v in row.values())
        for row in table.to_pylist()
    )


def test_streamed_parts_keep_the_schema_and_rows_of_materialized_ones(tmp_path: Path) -> None:
    store, run_id = build_finished_run(tmp_path / "store")  # assembled by assemble_run
    for view in RUN_OUTPUTS:
        part = pq.read_table(store.root / f"assembled/{view}/run_id={run_id}/part-0.parquet")
        reference = materialized_view(store, run_id, view)
        assert part.schema.equals(reference.schema), view
        assert part.num_rows > 0 and sorted_rows(part) == sorted_rows(reference), view
    leftovers = [p for p in store.root.rglob(".*") if p.name != warehouse.SCHEMA_ANCHOR]
    assert leftovers == []  # no spill directory, no temporary part


def test_assembly_runs_under_the_runs_duckdb_memory_limit(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    with warehouse.assembly_connection("96MB", spill) as con:
        limit, directory = con.execute(
            "select current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchall()[0]
    assert (limit, directory) == ("91.5 MiB", str(spill))  # 96 MB, as DuckDB prints it

    store, run_id = build_finished_run(tmp_path / "store")
    parameters = PortfolioRunParameters(
        store=str(store.root), run_id=run_id, candidates=5, eval_samples=2, judge_samples=1
    )
    # A limit no query fits in fails: assembly runs under the run's limit, not DuckDB's own.
    starved = parameters.model_copy(update={"duckdb_memory_limit": "1KB"})
    with pytest.raises(duckdb.OutOfMemoryException):
        assemble_run.fn(RunRef(store=str(store.root), run_id=run_id), starved)


def test_p_method_is_a_run_parameter_that_reaches_the_assembly() -> None:
    """--p-method lands in the manifest and the SQL's run_settings; a manifest written before
    the parameter existed assembles with the method it was built with."""
    chosen = PortfolioRunParameters(p_method="sequence")
    assert warehouse.AssemblySettings.from_parameters(chosen).p_method == "sequence"
    old_manifest = PortfolioRunParameters().model_dump()
    del old_manifest["p_method"]
    assert warehouse.AssemblySettings.from_parameters(old_manifest).p_method == "length_normalized"
    assert PortfolioRunParameters(p_method="frequency").fingerprint() != (
        PortfolioRunParameters().fingerprint()
    )
    with pytest.raises(ValueError, match="p_method"):
        PortfolioRunParameters(p_method="softmax")
