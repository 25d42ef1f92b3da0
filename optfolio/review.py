"""Reviewing a finished run: each problem's portfolio as a person sees it, and their decision.

A reviewer looks at one problem's portfolio at a chosen α (the members, best-ranked first, with
formulation, code, how the code ran, the evaluator's and the judge's scores and, where the
truth is known, correctness) and either chooses one member or rejects them all with a comment.
Decisions are the ``decisions`` table, one part per (run, problem): deciding again replaces the
earlier decision. The ``review`` flow asks in the Prefect UI, ``optfolio review`` in a shell;
both go through :func:`make_decision`, so both refuse the same things.

Portfolios are computed by the ``review_members`` view with the run's own tie-break seed, so
they are the portfolios the run reported, for any α in [0, 1]. Under the ``answer`` unit the
portfolio is of answers (``review_answer_members``): candidates whose code ran ok with
objectives equal within 1e-6 relative are one answer, shown by its representative candidate
with its members folded under it; choosing an answer records its representative.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from optfolio import evaluators, run_results, warehouse
from optfolio.calibration import CalibrationRecord, run_calibration
from optfolio.errors import InputError
from optfolio.parameters import Cli
from optfolio.portfolio import UNITS, Unit, check_alpha
from optfolio.schemas import DECISIONS
from optfolio.store import RunStore, part_name

Source = Literal["ui", "cli"]
SOURCES: tuple[str, ...] = ("ui", "cli")
DEFAULT_ALPHA = 0.5
# The form's choice that rejects every member; candidate ids start with "c-", never a space.
REJECT_ALL = "reject all"
OUTPUT_TAIL_CHARS = 1500  # of stdout/stderr shown per member; the store keeps the whole output
DEFAULT_UNIT: Unit = "candidate"
REPRESENTATIVE_MARK = "★"


class ReviewParameters(BaseModel):
    """The ``review`` flow's parameters: which finished run, its portfolios at which α, ranking
    and unit, and who decides. ``optfolio review`` shares the options of the same name."""

    model_config = ConfigDict(extra="forbid")

    run_id: Annotated[str, Cli("--run")] = Field(description="The finished run's id")
    store: Annotated[str, Cli(envvar="OPTFOLIO_STORE")] = Field(
        "store", description="Store root: a directory or a URI such as file:///shared/store"
    )
    alpha: float = Field(
        DEFAULT_ALPHA, ge=0, le=1, description="The portfolio's α: mass 1 − α is covered"
    )
    evaluator: evaluators.Evaluator = Field(
        evaluators.DEFAULT_EVALUATOR, description=evaluators.evaluator_help()
    )
    unit: Unit = Field(
        DEFAULT_UNIT,
        description="What the portfolio holds: candidate (each distinct text) or answer"
        " (candidates with equal objectives as one; choosing an answer records its"
        " representative candidate)",
    )
    problem_ids: list[str] | None = Field(None, description="Only these problems (empty: all)")
    reviewer: str = Field("", description="The reviewer's name, filled into each form")
    revisit_decided: bool = Field(False, description="Ask again about problems already decided")
    wait_per_problem_s: int = Field(
        7 * 24 * 3600, ge=1, description="How long to wait for each decision, in seconds"
    )


@dataclass(frozen=True)
class ReviewMember:
    """One portfolio member as the reviewer sees it."""

    candidate_id: str
    rank: int  # 1 = best under the evaluator
    p: float
    n_samples: int
    formulation: str | None
    code: str | None
    solver: str | None
    execution_status: str | None
    solver_status: str | None
    objective: float | None
    runtime_s: float | None
    stdout: str | None
    stderr: str | None
    evaluator_score: float | None  # mean of the samples, 1..100
    evaluator_scores: tuple[float | None, ...]
    judge_score: float | None  # mean normalized, 0..1
    correct: bool | None  # None: no ground truth


@dataclass(frozen=True)
class ReviewAnswer:
    """One answer of an answer-level portfolio: its representative stands for it, its member
    candidates are folded under it."""

    answer_id: str
    rank: int  # 1 = best answer under the evaluator
    p: float  # the members' summed p
    n_candidates: int
    n_samples: int  # generator samples behind it
    evaluator_samples: int  # the evaluator's score samples over its members
    evaluator_score: float | None  # the mean of those samples, 1..100
    objective: float | None
    judge_score: float | None  # the mean of its members' judge samples, 0..1
    correct: bool | None  # some member correct; None: no ground truth
    representative_id: str  # what choosing the answer records
    members: tuple[ReviewMember, ...]  # the representative first, then by candidate rank

    @property
    def representative(self) -> ReviewMember:
        return next(m for m in self.members if m.candidate_id == self.representative_id)


def calibration_flag(calibration: CalibrationRecord) -> str:
    """What the calibrated α̂ promises, in a reviewer's words."""
    return (
        f"calibrated: holds a correct model with probability ≥ {100 * calibration.confidence:g}%"
        " on problems like these"
    )


def is_calibrated(
    calibration: CalibrationRecord | None, alpha: float, evaluator: str, unit: str
) -> bool:
    """Whether the portfolio at ALPHA of UNITs ranked by EVALUATOR is the calibrated one."""
    if calibration is None:
        return False
    return (calibration.alpha, calibration.evaluator, calibration.unit) == (alpha, evaluator, unit)


@dataclass(frozen=True)
class ProblemReview:
    """One problem's portfolio at ``alpha`` under ``evaluator``, of ``unit``s. Under the
    answer unit, ``members`` are the answers' representatives (what a choice records)."""

    run_id: str
    problem_id: str
    description: str
    objective_truth: float | None
    alpha: float
    evaluator: str
    target_reached: bool
    members: tuple[ReviewMember, ...]
    unit: Unit = DEFAULT_UNIT
    answers: tuple[ReviewAnswer, ...] = ()
    # the run's calibration, when this portfolio is the calibrated one (α̂, evaluator, unit)
    calibration: CalibrationRecord | None = None

    @property
    def calibration_flag(self) -> str | None:
        return None if self.calibration is None else calibration_flag(self.calibration)

    @property
    def member_ids(self) -> list[str]:
        return [member.candidate_id for member in self.members]

    @property
    def choices(self) -> list[str]:
        """What a reviewer may choose, best first: members, or under the answer unit answers."""
        if self.unit == "answer":
            return [answer.answer_id for answer in self.answers]
        return self.member_ids

    def chosen_candidate(self, choice: str) -> str | None:
        """The candidate a choice records (an answer's is its representative, whose id may be
        given too), or None when CHOICE is not in the portfolio."""
        if self.unit == "answer":
            for answer in self.answers:
                if choice in (answer.answer_id, answer.representative_id):
                    return answer.representative_id
            return None
        return choice if choice in self.member_ids else None


@dataclass(frozen=True)
class Decision:
    """A ``decisions`` row (``run_id`` is the part's path, as in every stage table)."""

    run_id: str
    problem_id: str
    alpha: float
    evaluator: str
    decision: Literal["chosen", "rejected"]
    candidate_id: str | None
    comment: str
    reviewer: str
    decided_at: datetime
    source: str

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DECISIONS.names}


# ---- reading portfolios ----------------------------------------------------------------------


def load_reviews(
    store: RunStore,
    run_id: str,
    alpha: float = DEFAULT_ALPHA,
    evaluator: str = evaluators.DEFAULT_EVALUATOR,
    problem_ids: Sequence[str] | None = None,
    unit: Unit = DEFAULT_UNIT,
) -> list[ProblemReview]:
    """Every (or each named) problem's portfolio of a finished run, in problem order, of
    candidates or (UNIT ``answer``) of answers."""
    check_alpha(alpha)
    evaluators.evaluator_kind(evaluator)  # an unregistered kind is refused, naming the kinds
    if unit not in UNITS:
        raise InputError(f"unit {unit!r}: use one of {', '.join(UNITS)}")
    if run_id not in store.runs("problems"):
        known = ", ".join(store.runs("problems")) or "none"
        raise InputError(f"run {run_id!r}: not in store {store.root} (runs: {known})")
    # only this α, assembled as the run was (its tie-break seed, its p method); the calibrated
    # α̂ is the quality views' flag, which a review does not read
    settings = dataclasses.replace(
        run_results.assembly_settings(store, run_id),
        alphas=(alpha,),
        calibrated_alpha=None,
        calibrated_evaluator=None,
        calibrated_unit=None,
    )
    with warehouse.connect(store, [run_id], settings) as con:
        problems = con.sql(
            "select problem_id, description, objective_truth from problems order by problem_id"
        ).to_arrow_table()
        members = con.sql(
            "select * from review_members where evaluator = ? order by problem_id, rank"
            if unit == "candidate"
            else "select * from review_answer_members where evaluator = ?"
            " order by problem_id, answer_rank, is_representative desc, rank",
            params=[evaluator],
        ).to_arrow_table()
    wanted = list(problems.column("problem_id").to_pylist())
    if problem_ids is not None:
        unknown = [p for p in problem_ids if p not in wanted]
        if unknown:
            raise InputError(f"run {run_id!r}: no problem(s) {', '.join(map(repr, unknown))}")
        wanted = list(dict.fromkeys(problem_ids))
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for row in members.to_pylist():
        by_problem.setdefault(row["problem_id"], []).append(row)
    texts = {row["problem_id"]: row for row in problems.to_pylist()}
    calibration = run_calibration(store, run_id)
    if not is_calibrated(calibration, alpha, evaluator, unit):
        calibration = None
    reviews = []
    for problem_id in wanted:
        rows = by_problem.get(problem_id, [])
        answers = _answers(rows) if unit == "answer" else ()
        members = (
            tuple(a.representative for a in answers)
            if unit == "answer"
            else tuple(_member(row) for row in rows)
        )
        reviews.append(
            ProblemReview(
                run_id=run_id,
                problem_id=problem_id,
                description=texts[problem_id]["description"],
                objective_truth=texts[problem_id]["objective_truth"],
                alpha=alpha,
                evaluator=evaluator,
                # no valid candidate: an empty portfolio, which can only be rejected
                target_reached=bool(rows and rows[0]["target_reached"]),
                members=members,
                unit=unit,
                answers=answers,
                calibration=calibration,
            )
        )
    return reviews


def _answers(rows: list[dict[str, Any]]) -> tuple[ReviewAnswer, ...]:
    """One problem's answers from its review_answer_members rows (answer by answer, the
    representative first)."""
    by_answer: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_answer.setdefault(row["answer_id"], []).append(row)
    answers = []
    for answer_id, members in by_answer.items():
        first = members[0]
        answers.append(
            ReviewAnswer(
                answer_id=answer_id,
                rank=int(first["answer_rank"]),
                p=float(first["answer_p"]),
                n_candidates=int(first["answer_n_candidates"]),
                n_samples=int(first["answer_n_samples"]),
                evaluator_samples=int(first["answer_evaluator_samples"]),
                evaluator_score=first["answer_evaluator_score"],
                objective=first["answer_objective"],
                judge_score=first["answer_judge_score"],
                correct=first["answer_correct"],
                representative_id=first["representative_candidate_id"],
                members=tuple(_member(row) for row in members),
            )
        )
    return tuple(answers)


def _member(row: dict[str, Any]) -> ReviewMember:
    return ReviewMember(
        candidate_id=row["candidate_id"],
        rank=int(row["rank"]),
        p=float(row["p"]),
        n_samples=int(row["n_samples"]),
        formulation=row["formulation"],
        code=row["code"],
        solver=row["solver"],
        execution_status=row["execution_status"],
        solver_status=row["solver_status"],
        objective=row["objective"],
        runtime_s=row["runtime_s"],
        stdout=row["stdout"],
        stderr=row["stderr"],
        evaluator_score=row["evaluator_score"],
        evaluator_scores=tuple(row["evaluator_scores"] or ()),
        judge_score=row["judge_score"],
        correct=row["correct"],
    )


# ---- decisions -------------------------------------------------------------------------------


def make_decision(
    review: ProblemReview,
    choice: str | None,
    comment: str = "",
    reviewer: str = "",
    source: str = "cli",
    decided_at: datetime | None = None,
) -> Decision:
    """A valid decision on REVIEW: CHOICE is a member's candidate id (under the answer unit an
    answer's id, recorded as its representative candidate), or None / ``REJECT_ALL`` to reject
    every member, which needs a comment saying why."""
    where = f"run {review.run_id!r}, problem {review.problem_id!r}"
    if source not in SOURCES:
        raise InputError(f"{where}: source {source!r}: use one of {', '.join(SOURCES)}")
    comment = (comment or "").strip()
    reviewer = (reviewer or "").strip() or "anonymous"
    rejected = choice is None or choice.strip() == REJECT_ALL
    if rejected and not comment:
        raise InputError(f"{where}: comment: say why the portfolio is rejected")
    chosen = None if rejected else review.chosen_candidate(choice)
    if not rejected and chosen is None:
        members = ", ".join(review.choices) or "none"
        if review.unit == "answer":
            raise InputError(
                f"{where}: answer {choice!r} is not in the answer portfolio at"
                f" alpha={review.alpha:g} (answers: {members})"
            )
        raise InputError(
            f"{where}: candidate {choice!r} is not in the portfolio at alpha={review.alpha:g}"
            f" (members: {members})"
        )
    return Decision(
        run_id=review.run_id,
        problem_id=review.problem_id,
        alpha=review.alpha,
        evaluator=review.evaluator,
        decision="rejected" if rejected else "chosen",
        candidate_id=chosen,
        comment=comment,
        reviewer=reviewer,
        decided_at=decided_at or datetime.now(UTC),
        source=source,
    )


def write_decision(store: RunStore, decision: Decision) -> Path:
    """Write (or replace) the problem's decision, atomically."""
    table = pa.Table.from_pylist([decision.row()], schema=DECISIONS)
    return store.write_part("decisions", decision.run_id, part_name(decision.problem_id), table)


def decided_problems(store: RunStore, run_id: str) -> set[str]:
    """Problems of RUN_ID that already have a decision."""
    return set(store.read("decisions", [run_id]).column("problem_id").to_pylist())


def read_decisions(store: RunStore, run_id: str | None = None) -> list[dict[str, Any]]:
    """The ``decisions`` view (decision and the chosen candidate's outcome), oldest first."""
    with warehouse.connect(store, None if run_id is None else [run_id]) as con:
        return (
            con.sql("select * from decisions order by decided_at, problem_id")
            .to_arrow_table()
            .to_pylist()
        )


# ---- rendering -------------------------------------------------------------------------------


def artifact_key(run_id: str, problem_id: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) stable per (run, problem)."""
    return "-".join(["review", _key_slug(run_id), _key_slug(problem_id)])


def _key_slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"
    # two ids that differ only in case or punctuation would share a slug: keep them apart
    return slug if slug == text else f"{slug}-{part_name(text)[-6:]}"


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _correct(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _tail(text: str | None) -> str:
    text = (text or "").rstrip()
    return text if len(text) <= OUTPUT_TAIL_CHARS else "…" + text[-OUTPUT_TAIL_CHARS:]


def _headline(review: ProblemReview) -> str:
    truth = _number(review.objective_truth, 6) if review.objective_truth is not None else "unknown"
    reached = "yes" if review.target_reached else "no"
    what = "answer portfolio" if review.unit == "answer" else "portfolio"
    size = len(review.answers) if review.unit == "answer" else len(review.members)
    line = (
        f"**{review.problem_id}**: {what} of {size} at α = {review.alpha:g}"
        f" ({review.evaluator} ranking; mass 1 − α reached: {reached}); known optimum: {truth}."
        " Evaluator: mean score 1–100; judge: mean 0–1."
    )
    if review.calibration is not None:
        line += f" **{review.calibration_flag}** (α̂ = {review.calibration.alpha:g})."
    return line


def _member_line(m: ReviewMember, representative: bool) -> str:
    mark = f"{REPRESENTATIVE_MARK} " if representative else ""
    return (
        f"  - {mark}`{m.candidate_id}`: candidate rank {m.rank}, p {_number(m.p, 4)},"
        f" eval {_number(m.evaluator_score, 1)}, judge {_number(m.judge_score, 2)},"
        f" run {m.execution_status or '–'}, objective {_number(m.objective, 6)}"
    )


def answers_markdown(review: ProblemReview) -> str:
    """The answer portfolio: a table of the answers, then each answer's members under it."""
    lines = [
        _headline(review),
        "",
        "| # | answer | candidates | samples | eval samples | p | objective | eval | judge"
        " | correct |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in review.answers:
        lines.append(
            f"| {a.rank} | {a.answer_id} | {a.n_candidates} | {a.n_samples}"
            f" | {a.evaluator_samples} | {_number(a.p, 4)} | {_number(a.objective, 6)}"
            f" | {_number(a.evaluator_score, 1)} | {_number(a.judge_score, 2)}"
            f" | {_correct(a.correct)} |"
        )
    if not review.answers:
        lines.append("| – | no valid answer: reject with a comment | | | | | | | | |")
        return "\n".join(lines)
    lines += [
        "",
        f"Members ({REPRESENTATIVE_MARK} the representative: its formulation and code stand for"
        " the answer, and choosing the answer records it):",
        "",
    ]
    for a in review.answers:
        lines.append(f"- #{a.rank} `{a.answer_id}` ({a.n_candidates} candidate(s))")
        lines += [_member_line(m, m.candidate_id == a.representative_id) for m in a.members]
    return "\n".join(lines)


def summary_markdown(review: ProblemReview) -> str:
    """A compact table of the members: the form's description in the UI, the CLI's listing.
    Under the answer unit, of the answers, each with its members under it."""
    if review.unit == "answer":
        return answers_markdown(review)
    lines = [
        _headline(review),
        "",
        "| # | candidate | run | objective | eval | judge | correct |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in review.members:
        lines.append(
            f"| {m.rank} | {m.candidate_id} | {m.execution_status or '–'}"
            f" | {_number(m.objective, 6)} | {_number(m.evaluator_score, 1)}"
            f" | {_number(m.judge_score, 2)} | {_correct(m.correct)} |"
        )
    if not review.members:
        lines.append("| – | no valid candidate: reject with a comment | | | | | |")
    return "\n".join(lines)


def review_markdown(review: ProblemReview) -> str:
    """The whole portfolio of one problem, for the Prefect artifact."""
    parts = [
        f"# Review: {review.problem_id} (run {review.run_id})",
        "",
        "## Problem",
        "",
        review.description,
        "",
        summary_markdown(review),
    ]
    if review.unit == "answer":
        for a in review.answers:
            parts += [
                "",
                f"## #{a.rank} answer `{a.answer_id}`",
                "",
                f"p = {_number(a.p, 4)}: {a.n_candidates} candidate(s), sampled {a.n_samples}×,"
                f" {a.evaluator_samples} evaluator sample(s)"
                f" (mean {_number(a.evaluator_score, 1)});"
                f" objective {_number(a.objective, 6)}; judge {_number(a.judge_score, 2)};"
                f" correct: {_correct(a.correct)}",
            ]
            parts += _member_markdown(
                a.representative, f"### Representative `{a.representative_id}`"
            )
    else:
        for m in review.members:
            parts += _member_markdown(m, f"## #{m.rank} `{m.candidate_id}`")
    return "\n".join(parts) + "\n"


def _member_markdown(m: ReviewMember, heading: str) -> list[str]:
    """One candidate in full: its facts, formulation, code and output."""
    samples = ", ".join(_number(s, 1) for s in m.evaluator_scores) or "none"
    parts = [
        "",
        heading,
        "",
        f"p = {_number(m.p, 4)}, sampled {m.n_samples}×; solver {m.solver or '–'};"
        f" run: {m.execution_status or '–'} (solver status {m.solver_status or '–'},"
        f" objective {_number(m.objective, 6)}, {_number(m.runtime_s, 2)} s);"
        f" evaluator {_number(m.evaluator_score, 1)} (samples {samples});"
        f" judge {_number(m.judge_score, 2)}; correct: {_correct(m.correct)}",
        "",
        "**Formulation**",
        "",
        (m.formulation or "(none)").strip(),
        "",
        "**Code**",
        "",
        "```python",
        (m.code or "").rstrip(),
        "```",
        "",
        "**Output** (stdout, then stderr; tails)",
        "",
        "```text",
        _tail(m.stdout) or "(empty)",
        "```",
    ]
    if (m.stderr or "").strip():
        parts += ["", "```text", _tail(m.stderr), "```"]
    return parts
