"""``optfolio calibrate``: the α̂ whose portfolio holds a correct unit with probability ≥ 1 − δ
on problems like the labelled ones of finished runs (README, "Calibrating α")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import RunIdsOption, StoreOption, existing_store
from optfolio.evaluators import DEFAULT_EVALUATOR, evaluator_help

if TYPE_CHECKING:
    from optfolio.calibration import Calibration, CalibrationRecord

# The human table shows the curve every 0.1 (and at α̂); --json gives every point.
SHOWN_STEP = 0.1


def calibrate_command(
    store: StoreOption = None,
    run: RunIdsOption = None,
    delta: Annotated[
        float,
        typer.Option(help="Miss probability δ: the portfolio holds a correct unit w.p. ≥ 1 − δ."),
    ] = 0.1,
    evaluator: Annotated[str, typer.Option(help=evaluator_help())] = DEFAULT_EVALUATOR,
    unit: Annotated[
        str,
        typer.Option(help="What must be correct: a candidate, or an answer (equal objectives)."),
    ] = "candidate",
    name: Annotated[
        str | None,
        typer.Option(help="Store it under this name (default: cal- + a hash of the request)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Calibrate α on finished runs with ground truth (split conformal); stores the result
    for `optfolio run --calibration NAME`."""
    import json

    from optfolio import calibration, run_results

    run_store = existing_store(store)
    calibration.check_delta(delta)
    calibration.check_unit(unit)
    problems, skipped = run_results.calibration_problems(run_store, run or [], evaluator, unit)
    result = calibration.calibrate(
        problems,
        delta,
        evaluator=evaluator,
        unit=unit,
        runs=list(dict.fromkeys(run or [])),
        skipped=skipped,
    )
    stored = calibration.record(result, name)
    path = calibration.save_calibration(run_store, stored)
    if as_json:
        typer.echo(json.dumps(as_dict(result, stored) | {"path": str(path)}))
    else:
        typer.echo(describe(result, stored, str(path)))


def as_dict(result: Calibration, stored: CalibrationRecord) -> dict[str, object]:
    return {
        "name": stored.name,
        "alpha": stored.alpha,
        "delta": stored.delta,
        "evaluator": stored.evaluator,
        "unit": stored.unit,
        "runs": list(stored.runs),
        "problems": stored.problems,
        "problems_never": stored.problems_never,
        "problems_without_ground_truth": result.skipped,
        "k": result.rule.k,
        "floor": stored.floor,
        "achievable_delta": stored.achievable_delta,
        "empirical_coverage": stored.empirical_coverage,
        "mean_size": stored.mean_size,
        "coverage_curve": [
            {"alpha": p.alpha, "coverage": p.coverage, "mean_size": p.mean_size}
            for p in result.coverage_curve
        ],
    }


def describe(result: Calibration, stored: CalibrationRecord, path: str) -> str:
    rule, unit = result.rule, stored.unit
    lines = [
        f"calibration {stored.name}: {', '.join(stored.runs)} (evaluator {stored.evaluator},"
        f" unit {unit})",
        f"  α̂ = {stored.alpha:.6g}: holds a correct {unit} with probability ≥ {1 - rule.delta:.0%}"
        " on problems exchangeable with these",
        f"  δ = {rule.delta:g}, n = {rule.problems} problems with ground truth"
        f" ({result.skipped} without left out), k = {rule.k}",
        f"  floor {rule.floor:.3g}: {rule.never} of {rule.problems} hold no correct {unit}"
        " at any α",
        f"  achievable δ ≥ {rule.achievable_delta:.4g}",
        f"  at α̂: mean portfolio size {stored.mean_size:.3g},"
        f" empirical coverage {stored.empirical_coverage:.3g}",
        "",
        "      α  holds correct  mean size",
    ]
    for point in result.coverage_curve:
        on_step = abs(point.alpha / SHOWN_STEP - round(point.alpha / SHOWN_STEP)) < 1e-9
        if on_step or point.alpha == stored.alpha:
            mark = "  ← α̂" if point.alpha == stored.alpha else ""
            lines.append(
                f"  {point.alpha:5.3f}  {point.coverage:13.3f}  {point.mean_size:9.2f}{mark}"
            )
    lines += ["", f"stored: {path} (optfolio run --calibration {stored.name})"]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
