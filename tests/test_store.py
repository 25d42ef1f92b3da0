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
from tests.plugins.writers import killed_writer, paused_writer


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


# ---- writers sharing one store (issue 14) -----------------------------------------------------

SWEEPING_WRITER = """
import sys, pyarrow as pa
from optfolio.store import RunStore
store, run_id, rounds = RunStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
n = 20_000
table = pa.table({"problem_id": [str(i) for i in range(n)], "dataset": ["d"] * n,
                  "description": ["x" * 40] * n, "objective_truth": [1.0] * n,
                  "solution_truth": [None] * n, "source": [None] * n})
for i in range(rounds):
    store.write_part("problems", run_id, f"part-{i}", table)
    store.remove_temporaries()  # what every run does at its start
print("done", flush=True)
"""


def test_writers_sweeping_one_store_never_remove_each_others_temporaries(tmp_path: Path) -> None:
    """Several processes write parts into one store and sweep it after every part, as runs
    starting beside each other do. A sweep that removed a live writer's temporary file made
    that writer's rename fail (FileNotFoundError): every writer must finish, every part whole."""
    writers, rounds = 4, 60
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SWEEPING_WRITER, str(tmp_path), f"w{n}", str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    outcomes = [process.communicate(timeout=300) for process in processes]
    failed = [
        err[-600:]
        for process, (_, err) in zip(processes, outcomes, strict=True)
        if process.returncode
    ]
    assert failed == [], failed
    store = RunStore(tmp_path)
    for n in range(writers):
        assert len(store.parts("problems", f"w{n}")) == rounds
    assert store.read("problems").num_rows == writers * rounds * 20_000
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_a_sweep_removes_a_dead_writers_temporary_and_keeps_a_live_ones(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    dead_temp = killed_writer(store.part_path("problems", "dead", "a"))
    with paused_writer(store.part_path("problems", "live", "a")) as live:
        assert store.remove_temporaries() == 1
        assert not dead_temp.exists() and live.temp.is_file()
        live.finish()
    assert not store.part_path("problems", "dead", "a").exists()


def test_temporaries_whose_writer_cannot_be_checked_are_swept_only_when_old(tmp_path: Path) -> None:
    """A writer on another host (a shared mount), or a name without an owner (an older
    version's), cannot be checked from here: its file is kept until it is older than any
    write takes."""
    import uuid

    from optfolio.store import STALE_AFTER_S

    directory = tmp_path / "problems" / "run_id=r"
    directory.mkdir(parents=True)
    other_host = f".a.parquet.tmp-0123456789ab.4242.987654-{uuid.uuid4().hex}"
    older_name = f".b.parquet.tmp-4242-{uuid.uuid4().hex}"
    paths = {name: directory / name for name in (other_host, older_name)}
    for path in paths.values():
        path.write_text("half")
    store = RunStore(tmp_path)
    assert store.remove_temporaries() == 0
    assert all(path.exists() for path in paths.values())
    past = time.time() - STALE_AFTER_S - 60
    for path in paths.values():
        os.utime(path, (past, past))
    assert store.remove_temporaries() == 2
    assert not any(path.exists() for path in paths.values())


def test_owner_identity_tells_a_recycled_pid_and_another_host_apart() -> None:
    from optfolio import owners

    me = owners.current()
    assert owners.Owner.parse(str(me)) == me and me.alive() is True
    assert owners.Owner(me.host, me.pid, str(int(me.ticks) + 1)).alive() is False  # PID reused
    assert owners.Owner("0123456789ab", me.pid, me.ticks).alive() is None  # another host
    assert owners.Owner.parse("host.example.org.12.34") is None  # not an owner this writes
