"""Benign candidates with each solver package in the image return the right objective."""

from __future__ import annotations

import pytest

from sandbox.examples import SOLVER_CANDIDATES

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def solver_results(sandbox_box: object) -> dict[str, object]:
    codes = [code for _, code, _ in SOLVER_CANDIDATES]
    results = sandbox_box.run_many(codes, parallelism=2)  # type: ignore[attr-defined]
    return {name: result for (name, _, _), result in zip(SOLVER_CANDIDATES, results, strict=True)}


@pytest.mark.parametrize(("name", "expected"), [(n, e) for n, _, e in SOLVER_CANDIDATES])
def test_solver_package_gives_right_objective(
    solver_results: dict[str, object], name: str, expected: float
) -> None:
    result = solver_results[name]
    assert result.status == "ok", result.stderr  # type: ignore[attr-defined]
    assert result.objective == pytest.approx(expected, rel=1e-6)  # type: ignore[attr-defined]
    assert result.solver_status.lower() == "optimal"  # type: ignore[attr-defined]
