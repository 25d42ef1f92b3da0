"""`optfolio run` shows progress read from the store: bars on a terminal, lines in a log."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from cli.run import StoreProgress
from optfolio.schemas import CANDIDATES, PROBLEMS
from optfolio.store import RunStore

RUN = "progress"


def _problems(store: RunStore, ids: list[str]) -> None:
    rows = [{"problem_id": i, "dataset": "sample", "description": f"problem {i}"} for i in ids]
    store.write_part("problems", RUN, "dataset", pa.Table.from_pylist(rows, schema=PROBLEMS))


def _candidates(store: RunStore, problem_id: str) -> None:
    row = {"problem_id": problem_id, "candidate_id": "c1", "n_samples": 1, "valid": True}
    store.write_part("candidates", RUN, problem_id, pa.Table.from_pylist([row], schema=CANDIDATES))


def _wait_for(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "progress never caught up"
        time.sleep(0.02)


def test_a_log_gets_a_line_whenever_a_count_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(tmp_path / "store")
    seen: list[str] = []

    def printed() -> list[str]:
        seen.extend(capsys.readouterr().out.splitlines())
        return seen

    with StoreProgress(store.root, RUN, judging=False, interval_s=0.02, terminal=False):
        _wait_for(lambda: printed())  # before the dataset is loaded: totals unknown
        _problems(store, ["p1", "p2"])
        _wait_for(lambda: any("0/2" in line for line in printed()))
        _candidates(store, "p1")
        _wait_for(lambda: any("candidates 1/2" in line for line in printed()))
        _candidates(store, "p2")
    # the last counts are printed even when they changed just before the run ended
    lines = printed()
    assert all(line.startswith("progress ") for line in lines), lines
    assert "candidates 0/?  executions 0/?  scores 0/?" in lines[0]
    assert "judgments" not in "".join(lines)  # not judging: no judgments stage
    assert lines[-1].endswith("candidates 2/2  executions 0/2  scores 0/2")
    assert len(lines) == len(set(lines)) == 4, lines  # one line per change, no repeats


def test_counts_read_the_store(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    progress = StoreProgress(store.root, RUN, judging=True)
    assert progress.counts() == (
        None,
        {"candidates": 0, "executions": 0, "scores": 0, "judgments": 0},
    )
    _problems(store, ["p1", "p2", "p3"])
    _candidates(store, "p3")
    assert progress.counts() == (
        3,
        {"candidates": 1, "executions": 0, "scores": 0, "judgments": 0},
    )
