"""Conformal calibration of α: the α̂ whose portfolio holds a correct unit (candidate or
answer) with probability ≥ 1 − δ on a new problem exchangeable with labelled ones.

Split conformal prediction (Vovk, Gammerman & Shafer 2005; Angelopoulos & Bates 2021), in the
set-valued form of conformal language modeling (Quach et al. 2024). Each calibration problem
(one with ground truth, in a finished run) gives one *conformity value*: the supremum of the α
whose portfolio still holds a correct unit, 1 − the mass ranked before its first correct unit,
or "never" (None) when no valid unit is correct. With n values and k = ⌊δ(n + 1)⌋, α̂ is the
k-th smallest: a new problem's value falls strictly below the k-th smallest of n others with
probability ≤ k/(n + 1) ≤ δ (at most k of n + 1 exchangeable values can be), and only then
does its portfolio at α̂ miss every correct unit. No α can cover a problem without a correct
unit, so δ must be at least (never + 1)/(n + 1): a smaller δ is refused, naming that bound.

The values are computed by ``sql/conformity_scores.sql`` over ``unit_rankings`` and
``unit_outcomes`` (and, for reference, by :func:`conformity_value`). A calibration is stored
as one file, ``<store>/calibrations/<name>.parquet`` (:data:`optfolio.schemas.CALIBRATIONS`;
writing a name again replaces it). A run started with ``calibration=<name>`` keeps a copy
beside its manifest, so the α̂ it was assembled with stays that run's when the name is
replaced later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from optfolio.errors import InputError
from optfolio.evaluators import evaluator_kind
from optfolio.parameters import closed_alpha_grid
from optfolio.portfolio import MASS_TOLERANCE, UNITS, check_alpha, portfolio_size
from optfolio.runs import manifest_path
from optfolio.schemas import CALIBRATIONS
from optfolio.settings import SQL_DIR
from optfolio.store import RunStore, check_name, write_parquet_atomically

if TYPE_CHECKING:
    from optfolio.warehouse import AssemblySettings

CALIBRATIONS_DIR = "calibrations"
RUN_COPY = "calibration.parquet"  # beside the run's manifest
# α̂ sits this far below the k-th smallest conformity value (see conformal_alpha).
MARGIN = 2 * MASS_TOLERANCE


# ---- the rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlphaRule:
    """The split-conformal α̂ of n conformity values at δ, and what bounds it."""

    alpha: float
    delta: float
    problems: int  # n
    never: int  # problems with no correct unit: no α covers them
    k: int  # α̂ comes from the k-th smallest value, k = ⌊δ(n + 1)⌋
    order_statistic: float  # that value

    @property
    def floor(self) -> float:
        """The share of problems no α can cover: coverage is at most 1 − floor."""
        return self.never / self.problems

    @property
    def achievable_delta(self) -> float:
        return achievable_delta(self.problems, self.never)


def achievable_delta(problems: int, never: int) -> float:
    """The smallest δ with an answer: k = ⌊δ(n + 1)⌋ must pass every "never" value."""
    return (never + 1) / (problems + 1)


def order_index(delta: float, problems: int) -> int:
    """k = ⌊δ(n + 1)⌋, of δ as typed: 0.29 × 100 is 28.999999999999996 in floating point,
    and the bound δ = (never + 1)/(n + 1) this module names must itself be accepted."""
    return math.floor(round(delta * (problems + 1), 9))


def check_delta(delta: float) -> float:
    if not (isinstance(delta, int | float) and math.isfinite(delta) and 0.0 < delta < 1.0):
        raise InputError(f"delta={delta!r} is outside (0, 1)")
    return float(delta)


def conformal_alpha(values: Sequence[float | None], delta: float) -> AlphaRule:
    """α̂ from the calibration problems' conformity values (None: no correct unit).

    Refused (one line naming the achievable δ) when ⌊δ(n + 1)⌋ = 0 or the k-th smallest value
    is "never"."""
    check_delta(delta)
    problems = len(values)
    never = sum(1 for value in values if value is None)
    for value in values:
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InputError(f"conformity value {value!r} is outside [0, 1]")
    k = order_index(delta, problems)
    if k < 1 or k <= never:
        raise InputError(refusal(delta, problems, never, k))
    value = sorted(v for v in values if v is not None)[k - 1 - never]
    # The portfolio at α holds the first correct unit (rank r ≥ 2) iff
    # cum_p(r − 1) < 1 − α − MASS_TOLERANCE, i.e. α < value − MASS_TOLERANCE: the supremum is
    # not attained. Sitting 2·MASS_TOLERANCE below the k-th value, α̂ misses a new problem
    # only when its value is strictly below the k-th (probability ≤ k/(n + 1) ≤ δ), and the
    # margin absorbs SQL's and Python's cumulative sums differing in the last bits. A value
    # of 1 is rank 1, held at every α in [0, 1] (attained): α̂ = 1 then misses only problems
    # whose value is below 1. Clamped at 0: no smaller α exists.
    alpha = 1.0 if value == 1.0 else max(0.0, value - MARGIN)
    return AlphaRule(alpha, float(delta), problems, never, k, value)


def refusal(delta: float, problems: int, never: int, k: int) -> str:
    bound = achievable_delta(problems, never)
    if bound >= 1.0:
        which = (
            "there are no calibration problems"
            if problems == 0
            else f"none of the {problems} calibration problems has a correct unit"
        )
        return f"delta={delta:g} is not achievable: {which}, so the smallest achievable δ is 1"
    why = (
        f"needs ⌊δ(n + 1)⌋ ≥ 1, and n = {problems}"
        if k < 1
        else f"the {k}-th smallest of n = {problems} is a problem without a correct unit"
        f" ({never} have none)"
    )
    return (
        f"delta={delta:g} is not achievable ({why}): the smallest achievable δ is"
        f" {rounded_up(bound)} (= {Fraction(never + 1, problems + 1)}); give a larger --delta"
        " or more labelled problems"
    )


def rounded_up(value: float, digits: int = 4) -> str:
    """VALUE rounded up to DIGITS decimals, so that the δ shown is itself accepted."""
    scale = 10**digits
    return f"{math.ceil(round(value * scale, 6)) / scale:g}"


# ---- one problem ---------------------------------------------------------------------------


def conformity_value(
    ranked_p: Sequence[float], ranked_valid: Sequence[bool], ranked_correct: Sequence[bool | None]
) -> float | None:
    """The Python reference of ``sql/conformity_scores.sql``'s ``alpha_sup`` for one ranking
    (best first): 1 − the mass ranked before the first valid correct unit; None if none."""
    mass = 0.0
    for p, valid, correct in zip(ranked_p, ranked_valid, ranked_correct, strict=True):
        if valid and correct:
            return 1.0 - mass
        mass += p
    return None


@dataclass(frozen=True)
class CalibrationProblem:
    """One labelled problem of a run, as calibration sees one ranking of it."""

    run_id: str
    problem_id: str
    ranked_p: tuple[float, ...]  # the valid units' p, best first (⊥ never enters a portfolio)
    first_correct_rank: int | None  # None: no valid unit is correct
    alpha_sup: float | None  # the conformity value (None: never)

    def size(self, alpha: float) -> int:
        """k*(α), as the portfolio is cut (optfolio.portfolio.portfolio_size)."""
        return portfolio_size(self.ranked_p, [True] * len(self.ranked_p), alpha)[0]

    def holds_correct(self, alpha: float) -> bool:
        rank = self.first_correct_rank
        return rank is not None and self.size(alpha) >= rank


# ---- a calibration -------------------------------------------------------------------------


@dataclass(frozen=True)
class CoveragePoint:
    alpha: float
    coverage: float  # share of calibration problems whose portfolio holds a correct unit
    mean_size: float


@dataclass(frozen=True)
class Calibration:
    """α̂ with what a person needs to judge it, over the calibration problems."""

    rule: AlphaRule
    evaluator: str
    unit: str
    runs: tuple[str, ...]
    skipped: int  # problems without ground truth, left out
    empirical_coverage: float  # at α̂
    mean_size: float  # mean k*(α̂)
    coverage_curve: tuple[CoveragePoint, ...]

    @property
    def alpha(self) -> float:
        return self.rule.alpha

    def default_name(self) -> str:
        return default_name(self.runs, self.rule.delta, self.evaluator, self.unit)


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise InputError(f"unit {unit!r}: use one of {', '.join(UNITS)}")
    return unit


def calibrate(
    problems: Sequence[CalibrationProblem],
    delta: float,
    *,
    evaluator: str,
    unit: str,
    runs: Sequence[str],
    skipped: int = 0,
    grid: Iterable[float] | None = None,
) -> Calibration:
    """α̂ of PROBLEMS at δ, the coverage curve on GRID (default: α from 0 to 1 by 0.02) plus
    α̂, and the mean portfolio size at α̂."""
    evaluator_kind(evaluator)
    check_unit(unit)
    rule = conformal_alpha([problem.alpha_sup for problem in problems], delta)
    alphas = sorted({*(check_alpha(a) for a in (grid or closed_alpha_grid())), rule.alpha})
    curve = tuple(coverage_point(problems, alpha) for alpha in alphas)
    at_alpha = next(point for point in curve if point.alpha == rule.alpha)
    return Calibration(
        rule=rule,
        evaluator=evaluator,
        unit=unit,
        runs=tuple(runs),
        skipped=skipped,
        empirical_coverage=at_alpha.coverage,
        mean_size=at_alpha.mean_size,
        coverage_curve=curve,
    )


def coverage_point(problems: Sequence[CalibrationProblem], alpha: float) -> CoveragePoint:
    count = len(problems)
    held = sum(problem.holds_correct(alpha) for problem in problems)
    sizes = sum(problem.size(alpha) for problem in problems)
    return CoveragePoint(alpha, held / count, sizes / count)


def default_name(runs: Sequence[str], delta: float, evaluator: str, unit: str) -> str:
    """``cal-`` + a short hash of what was calibrated: the same request, the same name."""
    key = json.dumps([sorted(set(runs)), float(delta), evaluator, unit])
    return f"cal-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


# ---- reading conformity values from the views ----------------------------------------------

CONFORMITY_SQL = SQL_DIR / "conformity_scores.sql"

RANKED_P_SQL = """
select run_id, problem_id, list(p order by rank) as ranked_p
from unit_rankings
where valid and unit = ? and evaluator = ?
group by run_id, problem_id
"""


def read_problems(
    con: duckdb.DuckDBPyConnection, evaluator: str, unit: str
) -> tuple[list[CalibrationProblem], int]:
    """The calibration problems of the runs on CON (a warehouse connection) for one ranking,
    and how many problems were left out for having no ground truth."""
    evaluator_kind(evaluator)
    check_unit(unit)
    scores = con.execute(
        f"select * from ({CONFORMITY_SQL.read_text()}) where unit = ? and evaluator = ?"
        " order by run_id, problem_id",
        [unit, evaluator],
    ).fetchall()
    columns = [column[0] for column in con.description]
    rows = [dict(zip(columns, row, strict=True)) for row in scores]
    ranked = {
        (run_id, problem_id): tuple(ranked_p)
        for run_id, problem_id, ranked_p in con.execute(RANKED_P_SQL, [unit, evaluator]).fetchall()
    }
    problems = [
        CalibrationProblem(
            run_id=row["run_id"],
            problem_id=row["problem_id"],
            ranked_p=ranked.get((row["run_id"], row["problem_id"]), ()),
            first_correct_rank=row["first_correct_rank"],
            alpha_sup=row["alpha_sup"],
        )
        for row in rows
        if row["has_ground_truth"]
    ]
    return problems, len(rows) - len(problems)


# ---- storing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationRecord:
    """One stored calibration: a row of :data:`optfolio.schemas.CALIBRATIONS`."""

    name: str
    alpha: float
    delta: float
    evaluator: str
    unit: str
    runs: tuple[str, ...]
    problems: int
    problems_never: int
    floor: float
    achievable_delta: float
    empirical_coverage: float
    mean_size: float
    settings: dict[str, Any]
    created_at: datetime

    @property
    def confidence(self) -> float:
        """1 − δ: the probability the portfolio at α̂ holds a correct unit."""
        return 1.0 - self.delta

    def to_table(self) -> pa.Table:
        row = dataclasses.asdict(self) | {
            "runs": list(self.runs),
            "settings": json.dumps(self.settings, sort_keys=True),
        }
        return pa.Table.from_pylist([row], schema=CALIBRATIONS)

    @classmethod
    def from_table(cls, table: pa.Table) -> CalibrationRecord:
        [row] = table.to_pylist()
        return cls(**(row | {"runs": tuple(row["runs"]), "settings": json.loads(row["settings"])}))


def record(calibration: Calibration, name: str | None = None) -> CalibrationRecord:
    rule = calibration.rule
    return CalibrationRecord(
        name=check_name("calibration name", name or calibration.default_name()),
        alpha=rule.alpha,
        delta=rule.delta,
        evaluator=calibration.evaluator,
        unit=calibration.unit,
        runs=calibration.runs,
        problems=rule.problems,
        problems_never=rule.never,
        floor=rule.floor,
        achievable_delta=rule.achievable_delta,
        empirical_coverage=calibration.empirical_coverage,
        mean_size=calibration.mean_size,
        settings={
            "k": rule.k,
            "order_statistic": rule.order_statistic,
            "mass_tolerance": MASS_TOLERANCE,
            "problems_without_ground_truth": calibration.skipped,
        },
        created_at=datetime.now(UTC),
    )


def calibrations_dir(store: RunStore) -> Path:
    return store.root / CALIBRATIONS_DIR


def calibration_path(store: RunStore, name: str) -> Path:
    return calibrations_dir(store) / f"{check_name('calibration name', name)}.parquet"


def save_calibration(store: RunStore, calibration: CalibrationRecord) -> Path:
    """Write (or replace) the calibration's file, atomically."""
    return write_parquet_atomically(
        calibration.to_table(), calibration_path(store, calibration.name)
    )


def calibration_names(store: RunStore) -> list[str]:
    directory = calibrations_dir(store)
    if not directory.is_dir():
        return []
    # a hidden file (a schema anchor, say) is no calibration; temporaries end in .tmp-…
    return sorted(p.stem for p in directory.glob("*.parquet") if not p.name.startswith("."))


def load_calibration(store: RunStore, name: str) -> CalibrationRecord:
    """The stored calibration NAME; a missing one is refused naming those present."""
    path = calibration_path(store, name)
    if not path.is_file():
        present = ", ".join(calibration_names(store)) or "none"
        raise InputError(
            f"calibration {name!r} is not in store {store.root} (calibrations there: {present});"
            " make it with optfolio calibrate --name"
        )
    return CalibrationRecord.from_table(pq.read_table(path, schema=CALIBRATIONS))


def register_calibrations(con: duckdb.DuckDBPyConnection, store: RunStore) -> None:
    """The view ``calibrations``: every stored calibration (an empty table when none), read
    from the files when queried, so one written later appears."""
    found = con.execute(
        "select table_type from information_schema.tables where table_name = 'calibrations'"
    ).fetchone()
    if found:  # re-registering replaces a view or the empty table alike
        con.execute(f"drop {'view' if found[0] == 'VIEW' else 'table'} calibrations")
    if calibration_names(store):
        pattern = str(calibrations_dir(store) / "*.parquet").replace("'", "''")
        con.execute(f"create view calibrations as select * from read_parquet('{pattern}')")
        return
    con.register("_empty_calibrations", CALIBRATIONS.empty_table())
    try:
        con.execute("create table calibrations as select * from _empty_calibrations")
    finally:
        con.unregister("_empty_calibrations")


# ---- a run's calibration -------------------------------------------------------------------


def run_copy_path(store: RunStore, run_id: str) -> Path:
    return manifest_path(store, run_id).with_name(RUN_COPY)


def pin_run_calibration(store: RunStore, run_id: str, name: str) -> CalibrationRecord:
    """At a run's start: the calibration NAME, copied beside the run's manifest (a resumed run
    keeps the copy it started with). Missing: refused naming the calibrations present."""
    path = run_copy_path(store, run_id)
    if path.is_file():
        pinned = CalibrationRecord.from_table(pq.read_table(path, schema=CALIBRATIONS))
        if pinned.name == name:
            return pinned
    found = load_calibration(store, name)
    write_parquet_atomically(found.to_table(), path)
    return found


def run_calibration(store: RunStore, run_id: str) -> CalibrationRecord | None:
    """The calibration a run was started with (its copy; else the stored one of that name),
    or None when it names none. For the review page: α̂ holds a correct unit with probability
    ≥ ``confidence`` on problems like the calibration problems."""
    path = manifest_path(store, run_id)
    if not path.is_file():
        return None
    name = json.loads(path.read_text())["parameters"].get("calibration")
    if name is None:
        return None
    copy = run_copy_path(store, run_id)
    if copy.is_file():
        return CalibrationRecord.from_table(pq.read_table(copy, schema=CALIBRATIONS))
    return load_calibration(store, name)


def calibrated_settings(
    settings: AssemblySettings, calibration: CalibrationRecord | None
) -> AssemblySettings:
    """SETTINGS with α̂ added to the α grid and flagged (``quality.calibrated``)."""
    if calibration is None:
        return settings
    return dataclasses.replace(
        settings,
        alphas=tuple(sorted({*settings.alphas, calibration.alpha})),
        calibrated_alpha=calibration.alpha,
        calibrated_evaluator=calibration.evaluator,
        calibrated_unit=calibration.unit,
    )
