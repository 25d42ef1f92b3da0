"""Reliability: faults injected into a real run, bad input, and security (issue 7, parts 1–3).
The outcomes are recorded in docs/RELIABILITY.md."""

from __future__ import annotations

import pytest

from sandbox import Sandbox
from tests.plugins.second_engine import SecondEngine

pytestmark = pytest.mark.docker


def test_second_engine_runs_the_sandbox(second_engine: SecondEngine, sandbox_image: str) -> None:
    with Sandbox(client=second_engine.client(), image=sandbox_image) as box:
        result = box.run("print('STATUS: Optimal')\nprint('OBJECTIVE: 3')\n")
    assert result.status == "ok", result.stderr
    assert result.objective == 3.0
