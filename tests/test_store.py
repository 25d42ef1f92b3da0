"""The run store: layout, atomic writes, schema checks, reading across runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optfolio.schemas import PROBLEMS
from optfolio.store import RunStore, StoreError, StoreFull, part_name


def problems(n: int, prefix: str = "p") -> pa.Table:
    return pa.table(
        {
            "problem_id": [f"{prefix}{i}" for i in range(n)],
            "dataset": ["jsonl"] * n,
            "description": ["maximize x"] * n,
            "objective_truth": [float(i) for i in range(n)],
            "solution_truth": [None] * n,
            "source": [None] * n,
        }
    )


def test_layout_is_hive_partitioned_by_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    path = store.write_part("problems", "run-1", "part-a", problems(2))
    assert path == tmp_path / "problems" / "run_id=run-1" / "part-a.parquet"
    assert pq.read_schema(path).names == PROBLEMS.names  # run_id lives in the path only


def test_read_across_runs_adds_run_id(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.write_part("problems", "run-1", "a", problems(2))
    store.write_part("problems", "run-2", "a", problems(3, "q"))
    assert store.runs("problems") == ["run-1", "run-2"]
    both = store.read("problems")
    assert both.num_rows == 5
    assert sorted(set(both.column("run_id").to_pylist())) == ["run-1", "run-2"]
    assert store.read("problems", ["run-2"]).num_rows == 3
    assert store.read("executions").num_rows == 0


def test_rewriting_a_part_replaces_it_without_duplicates(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.write_part("problems", "r", "a", problems(2))
    store.write_part("problems", "r", "a", problems(2))
    assert store.read("problems").num_rows == 2


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path, monkeypatch) -> None:
    store = RunStore(tmp_path)
    store.write_part("problems", "r", "a", problems(1))
    before = store.part_path("problems", "r", "a").read_bytes()

    def exploding_write(table, where, **kwargs):  # the disk fills half-way through
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", exploding_write)
    with pytest.raises(StoreFull, match=r"no space left on the device holding .*a\.parquet"):
        store.write_part("problems", "r", "a", problems(5))
    with pytest.raises(OSError):
        store.write_part("problems", "r", "b", problems(5))
    assert store.part_path("problems", "r", "a").read_bytes() == before
    assert not store.part_path("problems", "r", "b").exists()
    assert [p.name for p in store.run_dir("problems", "r").iterdir()] == ["a.parquet"]


WRITER = """
import sys, pyarrow as pa
from optfolio.store import RunStore
n = 3_000_000
table = pa.table({"problem_id": [str(i) for i in range(n)], "dataset": ["d"] * n,
                  "description": ["x" * 50] * n, "objective_truth": [1.0] * n,
                  "solution_truth": [None] * n, "source": [None] * n})
print("ready", flush=True)
RunStore(sys.argv[1]).write_part("problems", "r", "big", table)
print("written", flush=True)
"""


def test_a_killed_writer_leaves_a_whole_part_or_none(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # somewhere inside the write
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    store = RunStore(tmp_path)
    final = store.part_path("problems", "r", "big")
    if final.exists():  # the rename happened: the file must be whole
        assert pq.read_metadata(final).num_rows == 3_000_000
    assert store.read("problems").num_rows in (0, 3_000_000)
    store.remove_temporaries()
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["description"]), "missing column.*description"),
        (lambda t: t.append_column("extra", pa.array([1, 2])), "unexpected column.*extra"),
        (
            lambda t: t.set_column(0, "problem_id", pa.array([None, "x"], pa.string())),
            "problem_id.*null",
        ),
        (lambda t: t.set_column(3, "objective_truth", pa.array(["a", "b"])), "objective_truth"),
        (lambda t: t.append_column("run_id", pa.array(["r", "r"])), "run_id"),
    ],
)
def test_bad_tables_are_refused_naming_the_column(tmp_path: Path, change, message) -> None:
    with pytest.raises(StoreError, match=message):
        RunStore(tmp_path).write_part("problems", "r", "a", change(problems(2)))


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(StoreError):
        RunStore(tmp_path).write_part("problems", name, "a", problems(1))
    with pytest.raises(StoreError):
        RunStore(tmp_path).write_part("problems", "r", name, problems(1))


def test_part_names_are_safe_and_stable() -> None:
    weird = "NL4Opt/problem #7 ü"
    assert part_name(weird) == part_name(weird)
    assert part_name(weird) != part_name("NL4Opt/problem #8 ü")
    assert "/" not in part_name(weird) and len(part_name("x" * 500)) <= 128
