"""The static review page of a run: one HTML file that opens offline, anywhere.

Per problem, the portfolio at a chosen α sits side by side (formulation, highlighted code, how
the code ran, the evaluator's and the judge's scores, correct or not), with the rest of the
candidates folded below, then the answer-level portfolio (candidates with equal objectives as
one answer, shown by its representative, its members folded under it); then the dataset
summary and the run's figures. A run started with a calibration has its α̂ flagged.

Everything an LLM wrote (formulations, code, program output, even problem texts from a
dataset) is untrusted: the page is rendered by Jinja2 with autoescaping on, so every value is
shown as text unless it is marked ``Markup`` here on purpose (pygments' highlighted code, which
escapes the code itself), and a Content-Security-Policy forbids scripts and any network fetch,
so even a missed escape could not run or load anything. Images are data: URIs and styles are
inline: the file needs nothing else. No endpoint, key or setting beyond model names is written.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from optfolio import run_results
from optfolio.calibration import CalibrationRecord
from optfolio.evaluators import DEFAULT_EVALUATOR, evaluator_kind
from optfolio.portfolio import check_alpha
from optfolio.review import (
    DEFAULT_ALPHA,
    OUTPUT_TAIL_CHARS,
    REPRESENTATIVE_MARK,
    ProblemReview,
    ReviewAnswer,
    ReviewMember,
    calibration_flag,
    is_calibrated,
    load_reviews,
    run_calibration,
)
from optfolio.store import RunStore, atomic_path

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    problems: int
    members: int
    figures: int


@dataclass(frozen=True)
class MemberCard:
    """One portfolio member as its card shows it; the template escapes every string."""

    member: ReviewMember
    correct: bool | None
    facts: list[tuple[str, str]]
    formulation: str
    code: Markup | None  # highlighted by pygments; None when the candidate has no code
    stdout: str
    stderr: str


@dataclass(frozen=True)
class OtherCandidate:
    """A candidate outside the portfolio: one row of the folded table."""

    rank: int
    candidate_id: str
    p: float
    status: str
    objective: float | None
    judge_score: float | None
    correct: bool | None


@dataclass(frozen=True)
class AnswerMemberRow:
    """One member candidate of an answer: a row of the answer's folded table."""

    candidate_id: str
    representative: bool
    rank: int  # the candidate's own rank under the evaluator
    p: float
    evaluator_score: float | None
    status: str
    objective: float | None
    judge_score: float | None
    correct: bool | None


@dataclass(frozen=True)
class AnswerCard:
    """One answer of the answer-level portfolio: its facts, its members folded, and its
    representative's formulation, code and output."""

    answer: ReviewAnswer
    correct: bool | None
    facts: list[tuple[str, str]]
    members: list[AnswerMemberRow]
    representative: MemberCard


@dataclass(frozen=True)
class ProblemSection:
    number: int
    review: ProblemReview
    held_mark: str  # ✓ a correct member held, ✗ none, ? no ground truth
    truth: str
    solution_truth: str | None
    ranking_label: str
    portfolio_line: str
    decision: dict[str, Any] | None
    cards: list[MemberCard]
    others: list[OtherCandidate]
    answer_review: ProblemReview
    answer_held_mark: str
    answer_line: str
    answers: list[AnswerCard]


@dataclass(frozen=True)
class Figure:
    name: str
    uri: str
    caption: str


def write_report(
    store: RunStore,
    run_id: str,
    out: Path,
    alpha: float = DEFAULT_ALPHA,
    evaluator: str = DEFAULT_EVALUATOR,
) -> WrittenReport:
    """Render the run's review page to ``out``, atomically (a reader never sees half a page)."""
    page, counts = render_report(store, run_id, alpha, evaluator)
    out = out.expanduser().resolve()
    with atomic_path(out) as temp:
        temp.write_text(page, encoding="utf-8")
    return WrittenReport(out, *counts)


def render_report(
    store: RunStore, run_id: str, alpha: float = DEFAULT_ALPHA, evaluator: str = DEFAULT_EVALUATOR
) -> tuple[str, tuple[int, int, int]]:
    """The page's HTML and (problems, portfolio members, figures) shown on it."""
    check_alpha(alpha)
    evaluator_kind(evaluator)  # an unregistered kind is refused, naming the kinds
    run_results.check_run(store, run_id)
    reviews = load_reviews(store, run_id, alpha, evaluator)
    answer_reviews = {
        review.problem_id: review
        for review in load_reviews(store, run_id, alpha, evaluator, unit="answer")
    }
    calibration = run_calibration(store, run_id)
    with run_results.connect_run(store, run_id, [alpha]) as con:
        candidates = run_results.query(
            con,
            """
            select
                rankings.problem_id, rankings.rank, rankings.candidate_id, rankings.valid,
                rankings.p, rankings.ranking_score, candidates.invalid_reason,
                outcomes.execution_status, outcomes.objective, outcomes.judge_score,
                outcomes.correct
            from rankings
            inner join candidate_outcomes as outcomes
                using (run_id, problem_id, candidate_id)
            inner join candidates using (run_id, problem_id, candidate_id)
            where rankings.evaluator = ?
            order by rankings.problem_id, rankings.rank
            """,
            [evaluator],
        )
        solutions = dict(con.execute("select problem_id, solution_truth from problems").fetchall())
        summary = run_results.summary_table(con, [alpha])
    figures = [
        Figure(name, uri, FIGURE_CAPTIONS.get(name, name))
        for name, uri in figure_data_uris(store, run_id).items()
    ]
    decisions = latest_decisions(store, run_id)
    manifest = run_results.run_manifest(store, run_id)

    problems = [
        problem_section(
            number,
            review,
            solutions.get(review.problem_id),
            candidates[candidates["problem_id"] == review.problem_id],
            decisions.get(review.problem_id),
            answer_reviews[review.problem_id],
        )
        for number, review in enumerate(reviews, start=1)
    ]
    template = templates().get_template(TEMPLATE)
    page = template.render(
        title=f"optfolio review: run {run_id}",
        # Our own constant, not data: its quotes must reach the meta tag as they are.
        content_security_policy=Markup(CONTENT_SECURITY_POLICY),
        run_id=run_id,
        facts=header_facts(run_id, manifest, alpha, evaluator, reviews, calibration),
        representative_mark=REPRESENTATIVE_MARK,
        problems=problems,
        alpha=alpha,
        summary_columns=list(summary.columns),
        summary_rows=[
            [number(v) if isinstance(v, float) else ("" if v is None else v) for v in row]
            for row in summary.itertuples(index=False)
        ],
        figures=figures,
    )
    members = sum(len(review.members) for review in reviews)
    return page, (len(reviews), members, len(figures))


@cache
def templates() -> jinja2.Environment:
    """The page's templates, shipped in ``optfolio/templates``: every value is escaped unless
    marked Markup, and a name the template uses but is not given fails the render."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("optfolio", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["number"] = number
    return environment


# ---- data --------------------------------------------------------------------------------


def figure_data_uris(store: RunStore, run_id: str) -> dict[str, str]:
    """The run's figures drawn afresh (they match the data on the page) as PNG data URIs."""
    import matplotlib.pyplot as plt

    uris = {}
    for name, figure in run_results.plot_run_figures(store, run_id).items():
        buffer = io.BytesIO()
        figure.savefig(buffer, dpi=110, format="png")
        plt.close(figure)
        uris[name] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return uris


def latest_decisions(store: RunStore, run_id: str) -> dict[str, dict[str, Any]]:
    """Each problem's reviewer decision, where one was made (one part per problem)."""
    return {row["problem_id"]: row for row in store.read("decisions", [run_id]).to_pylist()}


# ---- what the page shows -----------------------------------------------------------------


def number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


def correctness(correct: object) -> bool | None:
    """True, False, or None when there is no ground truth (a missing value, even NaN)."""
    return None if correct is None or pd.isna(correct) else bool(correct)


def tail(text: str | None) -> str:
    text = (text or "").rstrip()
    if len(text) <= OUTPUT_TAIL_CHARS:
        return text
    return (
        f"… ({len(text) - OUTPUT_TAIL_CHARS} earlier characters not shown)\n"
        + text[-OUTPUT_TAIL_CHARS:]
    )


def highlighted_code(code: str | None) -> Markup | None:
    """Python highlighted with inline styles, or None when there is no code."""
    if not code:
        return None
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    # Trusted markup, deliberately not escaped again: pygments escapes every character of the
    # code it highlights and adds only its own <div>/<pre>/<span style> tags.
    return Markup(highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, style="friendly")))


def header_facts(
    run_id: str,
    manifest: dict | None,
    alpha: float,
    evaluator: str,
    reviews: Sequence[ProblemReview],
    calibration: CalibrationRecord | None = None,
) -> list[tuple[str, str]]:
    facts = [("run", run_id), ("problems", str(len(reviews)))]
    if manifest:
        p = manifest["parameters"]
        models = sorted({p[role]["model"] for role in ("generator", "evaluator", "judge")})
        facts += [
            ("created", manifest.get("created", "")),
            ("dataset", p.get("dataset", "")),
            ("candidates N", str(p.get("candidates", ""))),
            ("evaluator samples m", str(p.get("eval_samples", ""))),
            ("judge samples", str(p.get("judge_samples", ""))),
            ("models", ", ".join(models)),  # names only: endpoints never reach the page
        ]
    facts += [
        ("portfolio", f"α = {alpha:g} (probability mass ≥ 1 − α = {1 - alpha:g})"),
        ("ranking", evaluator_kind(evaluator).label),
    ]
    if calibration is not None:
        # both units are on the page: the calibrated portfolios are when α and ranking match
        shown = is_calibrated(calibration, alpha, evaluator, calibration.unit)
        facts.append(
            (
                "calibrated α̂",
                f"α̂ = {calibration.alpha:g} ({calibration.unit}s,"
                f" {evaluator_kind(calibration.evaluator).label}):"
                f" {calibration_flag(calibration)} (δ = {calibration.delta:g}, calibrated on"
                f" {calibration.problems} problems)"
                + (
                    ""
                    if shown
                    else f"; this page shows α = {alpha:g}, {evaluator} ranking: render it with"
                    f" --alpha {calibration.alpha!r} --evaluator {calibration.evaluator} for the"
                    " calibrated portfolio"
                ),
            )
        )
    facts.append(("rendered", datetime.now(UTC).isoformat(timespec="seconds")))
    return facts


def held_mark(review: ProblemReview) -> str:
    held = (
        [a.correct for a in review.answers]
        if review.unit == "answer"
        else [m.correct for m in review.members]
    )
    if any(c is True for c in held):
        return "✓"
    return "?" if all(c is None for c in held) else "✗"


def problem_section(
    number_: int,
    review: ProblemReview,
    solution_truth: str | None,
    candidates: pd.DataFrame,
    decision: dict[str, Any] | None,
    answer_review: ProblemReview,
) -> ProblemSection:
    mass = sum(member.p for member in review.members)
    size = len(review.members)
    if not size:
        portfolio_line = "No valid candidate: the portfolio is empty."
    elif review.target_reached:
        portfolio_line = (
            f"k*(α) = {size} candidate(s) holding probability mass {number(mass)}"
            f" ≥ 1 − α = {1 - review.alpha:g}"
        )
    else:
        portfolio_line = (
            f"1 − α = {1 - review.alpha:g} not reached: all {size} valid candidate(s),"
            f" mass {number(mass)} (the rest is on invalid candidates)"
        )
    truth = number(review.objective_truth, 6) if review.objective_truth is not None else "unknown"
    return ProblemSection(
        number=number_,
        review=review,
        held_mark=held_mark(review),
        truth=truth,
        solution_truth=solution_truth,
        ranking_label=evaluator_kind(review.evaluator).label,
        portfolio_line=portfolio_line,
        decision=decision,
        cards=[member_card(member) for member in review.members],
        others=other_candidates(candidates, {m.candidate_id for m in review.members}),
        answer_review=answer_review,
        answer_held_mark=held_mark(answer_review),
        answer_line=answer_portfolio_line(answer_review),
        answers=[answer_card(answer) for answer in answer_review.answers],
    )


def answer_portfolio_line(review: ProblemReview) -> str:
    mass = sum(answer.p for answer in review.answers)
    size = len(review.answers)
    if not size:
        return "No valid answer: the portfolio is empty."
    if review.target_reached:
        return (
            f"k*(α) = {size} answer(s) holding probability mass {number(mass)}"
            f" ≥ 1 − α = {1 - review.alpha:g}"
        )
    return (
        f"1 − α = {1 - review.alpha:g} not reached: all {size} valid answer(s),"
        f" mass {number(mass)} (the rest is on invalid candidates)"
    )


def answer_card(answer: ReviewAnswer) -> AnswerCard:
    facts = [
        ("probability p", number(answer.p, 4)),
        ("candidates", str(answer.n_candidates)),
        ("sampled", f"{answer.n_samples}×"),
        (
            "evaluator (1–100)",
            f"{number(answer.evaluator_score, 1)} (over {answer.evaluator_samples} samples)",
        ),
        ("objective", number(answer.objective, 6)),
        ("judge (0–1)", number(answer.judge_score, 2)),
    ]
    members = [
        AnswerMemberRow(
            candidate_id=m.candidate_id,
            representative=m.candidate_id == answer.representative_id,
            rank=m.rank,
            p=m.p,
            evaluator_score=m.evaluator_score,
            status=m.execution_status or "–",
            objective=m.objective,
            judge_score=m.judge_score,
            correct=correctness(m.correct),
        )
        for m in answer.members
    ]
    return AnswerCard(
        answer=answer,
        correct=correctness(answer.correct),
        facts=facts,
        members=members,
        representative=member_card(answer.representative),
    )


def member_card(member: ReviewMember) -> MemberCard:
    samples = ", ".join(number(s, 1) for s in member.evaluator_scores) or "none"
    facts = [
        ("probability p", number(member.p, 4)),
        ("sampled", f"{member.n_samples}×"),
        ("solver", member.solver or "–"),
        ("run", member.execution_status or "–"),
        ("solver status", member.solver_status or "–"),
        ("objective", number(member.objective, 6)),
        ("runtime", f"{number(member.runtime_s, 2)} s"),
        ("evaluator (1–100)", f"{number(member.evaluator_score, 1)} (samples: {samples})"),
        ("judge (0–1)", number(member.judge_score, 2)),
    ]
    return MemberCard(
        member=member,
        correct=correctness(member.correct),
        facts=facts,
        formulation=(member.formulation or "(none)").strip(),
        code=highlighted_code(member.code),
        stdout=tail(member.stdout),
        stderr=tail(member.stderr),
    )


def other_candidates(candidates: pd.DataFrame, members: set[str]) -> list[OtherCandidate]:
    rest = candidates[~candidates["candidate_id"].isin(members)]
    return [
        OtherCandidate(
            rank=row.rank,
            candidate_id=row.candidate_id,
            p=row.p,
            status=row.execution_status if row.valid else f"⊥ {row.invalid_reason or 'invalid'}",
            objective=row.objective,
            judge_score=row.judge_score,
            correct=correctness(row.correct),
        )
        for row in rest.itertuples()
    ]


FIGURE_CAPTIONS = {
    "fig5_min_judge_kde": "Paper Fig. 5: the lowest judge score in the portfolio of the best s"
    " against s random candidates, per evaluator type; dashed lines are the means.",
    "size_and_coverage_vs_confidence": "Portfolio size and the share of a problem's correct"
    " candidates the portfolio holds, against 1 − α (95% bands over problems).",
    "holds_correct_vs_confidence": "Share of problems whose portfolio holds a correct"
    " candidate, against 1 − α, beside random candidates of the same size, pass@1 and"
    " majority vote.",
}
