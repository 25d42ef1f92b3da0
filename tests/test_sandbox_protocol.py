"""The output protocol parser and the result row: pure functions, no engine needed."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest

from optfolio.schemas import EXECUTIONS
from sandbox.limits import MemoryExceeded, OutputExceeded, TimeoutExceeded
from sandbox.protocol import parse_number, parse_output
from sandbox.result import ExecResult


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("STATUS: Optimal\nOBJECTIVE: 42\n", ("Optimal", 42.0)),
        ("status: optimal\nobjective: 1.5e3", ("optimal", 1500.0)),
        ("  Status = Infeasible\n  Objective = -0\n", ("Infeasible", 0.0)),
        ("STATUS: Optimal\nOBJECTIVE: 1\nSTATUS: Feasible\nOBJECTIVE: 2\n", ("Feasible", 2.0)),
        ("OBJECTIVE: inf\n", (None, math.inf)),
        ("OBJECTIVE: -Infinity\n", (None, -math.inf)),
        ("OBJECTIVE: nan\nSTATUS: Optimal", ("Optimal", None)),
        ("OBJECTIVE: not a number\n", (None, None)),
        ("OBJECTIVE:\nSTATUS:\n", (None, None)),
        ("OBJECTIVE: 1,234.5\n", (None, 1234.5)),
        ("OBJECTIVE: 3.25 (minimized)\n", (None, 3.25)),
        ("OBJECTIVE: +.5E-2\n", (None, 0.005)),
        ("", (None, None)),
    ],
)
def test_protocol_lines(stdout: str, expected: tuple[str | None, float | None]) -> None:
    assert parse_output(stdout) == expected


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        # PuLP's own prints
        ("Status: Optimal\nObjective value: 12.0\n", ("Optimal", 12.0)),
        ("Optimal value: 7.5\n", (None, 7.5)),
        ("Optimal objective: 3\n", (None, 3.0)),
        ("Total cost = 1000.25\n", (None, 1000.25)),
        ("Total profit: $ 88\n", (None, 88.0)),
        ("Minimum cost of the diet: 4.2\n", (None, 4.2)),
        ("Objective function value: -17\n", (None, -17.0)),
        # HiGHS' log lines
        (
            "Model status        : Optimal\nObjective value     :  2.1000000000e+01\n",
            ("Optimal", 21.0),
        ),
        # protocol lines beat fallbacks wherever they are
        ("OBJECTIVE: 5\nTotal cost = 9\n", (None, 5.0)),
        ("Model status : Infeasible\nSTATUS: Optimal\n", ("Optimal", None)),
        # numbers inside words are not objectives
        ("x1 = 3\ny2 = 4\n", (None, None)),
    ],
)
def test_fallbacks(stdout: str, expected: tuple[str | None, float | None]) -> None:
    assert parse_output(stdout) == expected


def test_parse_number_edges() -> None:
    assert parse_number("-0") == 0.0
    assert parse_number("1e400") == math.inf  # overflows like float() does
    assert parse_number("abc") is None
    assert parse_number("x2 then 7") == 7.0


def _result(**changes: object) -> ExecResult:
    base = ExecResult.from_output(
        status="ok",
        exit_code=0,
        stdout=b"STATUS: Optimal\nOBJECTIVE: 1e3\n\xff\x00",
        stderr=b"",
        stdout_truncated=False,
        stderr_truncated=False,
        runtime_s=0.5,
        image="optfolio-sandbox:test",
    )
    return ExecResult(**{**base.to_row(), **changes})  # type: ignore[arg-type]


def test_row_matches_executions_schema() -> None:
    row = _result().to_row()
    schema = pa.schema([f for f in EXECUTIONS if f.name not in ("problem_id", "candidate_id")])
    assert list(row) == schema.names
    table = pa.Table.from_pylist([row], schema=schema)  # types must convert as declared
    assert table.num_rows == 1
    assert row["objective"] == 1000.0 and row["solver_status"] == "Optimal"
    assert "\x00" not in row["stdout"] and "\ufffd" in row["stdout"]


def test_json_is_strict_even_for_infinite_objective() -> None:
    text = _result(objective=math.inf).to_json()
    assert json.loads(text)["objective"] is None
    assert "Infinity" not in text


@pytest.mark.parametrize(
    ("status", "error"),
    [("timeout", TimeoutExceeded), ("oom", MemoryExceeded), ("output_limit", OutputExceeded)],
)
def test_raise_for_status(status: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        _result(status=status).raise_for_status()
    assert _result().raise_for_status().ok
