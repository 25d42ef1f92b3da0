"""The CLI contract other tooling relies on: `optfolio sandbox exec FILE --json` and friends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

OPTFOLIO = [sys.executable, "-c", "from cli import main; main()"]


def _optfolio(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OPTFOLIO, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


@pytest.mark.parametrize(
    ("code", "status", "exit_code"),
    [
        ("print('STATUS: Optimal')\nprint('OBJECTIVE: -1.5e3')\n", "ok", 0),
        ("raise ValueError('bad model')\n", "error", 1),
        ("import time\ntime.sleep(60)\n", "timeout", 137),
    ],
)
def test_exec_json_contract(
    sandbox_image: str, tmp_path: Path, code: str, status: str, exit_code: int
) -> None:
    candidate = tmp_path / "candidate.py"
    candidate.write_text(code)
    done = _optfolio(
        "sandbox", "exec", str(candidate), "--timeout", "2", "--memory", "256", "--json"
    )
    assert done.returncode == 0, done.stderr  # the sandbox worked, whatever the candidate did
    result = json.loads(done.stdout)
    keys = {"status", "exit_code", "stdout", "stderr", "objective", "runtime_s", "solver_status"}
    assert keys <= set(result)
    assert (result["status"], result["exit_code"]) == (status, exit_code)
    if status == "ok":
        assert (result["objective"], result["solver_status"]) == (-1500.0, "Optimal")
    if status == "error":
        assert "bad model" in result["stderr"]


def test_exec_without_image_is_one_clear_line(sandbox_image: str, tmp_path: Path) -> None:
    candidate = tmp_path / "candidate.py"
    candidate.write_text("print(1)\n")
    env = {**os.environ, "OPTFOLIO_SANDBOX_IMAGE": "optfolio-sandbox:does-not-exist"}
    done = _optfolio("sandbox", "exec", str(candidate), "--json", env=env)
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip().count("\n") == 0
    assert "optfolio sandbox build" in done.stderr


def test_exec_without_engine_is_one_clear_line(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate.py"
    candidate.write_text("print(1)\n")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    done = _optfolio("sandbox", "exec", str(candidate), "--json", env=env)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "no Docker engine answers" in done.stderr


def test_doctor_passes(sandbox_image: str) -> None:
    done = _optfolio("sandbox", "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    assert "memory limit enforced" in done.stdout


def test_with_engine_runs_the_command_and_passes_its_status(sandbox_image: str) -> None:
    done = _optfolio("sandbox", "with-engine", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert done.returncode == 7, done.stderr
    assert _optfolio("sandbox", "engine", "status").returncode == 0  # still up: not ours


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["exec"],
        ["doctor"],
        ["build"],
        ["cleanup"],
        ["with-engine"],
        ["engine"],
        ["engine", "start"],
    ],
)
def test_help(command: list[str]) -> None:
    done = _optfolio("sandbox", *command, "--help")
    assert done.returncode == 0 and "Usage" in done.stdout
