"""The static review page of a run: one HTML file that opens offline, anywhere.

Per problem, the portfolio at a chosen α sits side by side (formulation, highlighted code, how
the code ran, the evaluator's and the judge's scores, correct or not), with the rest of the
candidates folded below; then the dataset summary and the run's figures.

Everything an LLM wrote (formulations, code, program output, even problem texts from a
dataset) is untrusted: every string is HTML-escaped (pygments escapes the code it highlights),
and a Content-Security-Policy forbids scripts and any network fetch, so even a missed escape
could not run or load anything. Images are data: URIs and styles are inline: the file needs
nothing else. No endpoint, key or setting beyond model names is written.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from optfolio import run_results
from optfolio.evaluators import DEFAULT_EVALUATOR, evaluator_kind
from optfolio.portfolio import check_alpha
from optfolio.review import (
    DEFAULT_ALPHA,
    OUTPUT_TAIL_CHARS,
    ProblemReview,
    ReviewMember,
    load_reviews,
)
from optfolio.store import RunStore, atomic_path

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    problems: int
    members: int
    figures: int


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
    figures = figure_data_uris(store, run_id)
    decisions = latest_decisions(store, run_id)
    manifest = run_results.run_manifest(store, run_id)

    sections = [
        problem_section(
            number,
            review,
            solutions.get(review.problem_id),
            candidates[candidates["problem_id"] == review.problem_id],
            decisions.get(review.problem_id),
        )
        for number, review in enumerate(reviews, start=1)
    ]
    body = "\n".join(
        [
            header(run_id, manifest, alpha, evaluator, reviews),
            contents(reviews),
            *sections,
            summary_section(summary, alpha),
            figures_section(figures),
        ]
    )
    members = sum(len(review.members) for review in reviews)
    title = f"optfolio review: run {run_id}"
    return page(title, body), (len(reviews), members, len(figures))


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


# ---- HTML pieces -------------------------------------------------------------------------


def esc(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


def correctness_badge(correct: bool | None) -> str:
    if correct is None or (isinstance(correct, float) and pd.isna(correct)):
        return '<span class="badge unknown" title="no ground truth">? unknown</span>'
    if correct:
        return '<span class="badge correct" title="objective matches the truth">✓ correct</span>'
    return '<span class="badge wrong" title="objective differs from the truth">✗ incorrect</span>'


def tail(text: str | None) -> str:
    text = (text or "").rstrip()
    if len(text) <= OUTPUT_TAIL_CHARS:
        return text
    return (
        f"… ({len(text) - OUTPUT_TAIL_CHARS} earlier characters not shown)\n"
        + text[-OUTPUT_TAIL_CHARS:]
    )


def highlighted_code(code: str | None) -> str:
    """Python highlighted with inline styles (pygments escapes the code itself)."""
    if not code:
        return '<pre class="empty">(no code)</pre>'
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, style="friendly"))


def header(
    run_id: str,
    manifest: dict | None,
    alpha: float,
    evaluator: str,
    reviews: Sequence[ProblemReview],
) -> str:
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
        ("rendered", datetime.now(UTC).isoformat(timespec="seconds")),
    ]
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return (
        f"<header><h1>Portfolio review: run {esc(run_id)}</h1>"
        f'<dl class="facts">{rows}</dl></header>'
    )


def contents(reviews: Sequence[ProblemReview]) -> str:
    items = []
    for number_, review in enumerate(reviews, start=1):
        held = [m.correct for m in review.members]
        mark = (
            "✓" if any(c is True for c in held) else ("?" if all(c is None for c in held) else "✗")
        )
        items.append(
            f'<li><a href="#problem-{number_}">{esc(review.problem_id)}</a>'
            f" — {len(review.members)} member(s), correct one held: {mark}</li>"
        )
    return (
        "<nav><h2>Problems</h2><ol>" + "".join(items) + "</ol>"
        '<p><a href="#summary">Dataset summary</a> · <a href="#figures">Figures</a></p></nav>'
    )


def problem_section(
    number_: int,
    review: ProblemReview,
    solution_truth: str | None,
    candidates: pd.DataFrame,
    decision: dict[str, Any] | None,
) -> str:
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
    parts = [
        f'<section class="problem" id="problem-{number_}"'
        f' data-problem-id="{esc(review.problem_id)}">',
        f"<h2>{number_}. {esc(review.problem_id)}</h2>",
        f'<pre class="description">{esc(review.description)}</pre>',
        f"<p><b>Known optimum:</b> {esc(truth)}"
        + (
            f' · <b>known solution:</b> <code class="solution">{esc(solution_truth)}</code>'
            if solution_truth
            else ""
        )
        + "</p>",
        f'<p class="portfolio-line"><b>Portfolio at α = {review.alpha:g}'
        f" ({esc(evaluator_kind(review.evaluator).label)}):</b> {esc(portfolio_line)}</p>",
    ]
    if decision:
        parts.append(decision_line(decision))
    parts.append('<div class="members">')
    parts += [member_card(member) for member in review.members]
    parts.append("</div>")
    parts.append(other_candidates(candidates, {m.candidate_id for m in review.members}))
    parts.append("</section>")
    return "\n".join(parts)


def decision_line(decision: dict[str, Any]) -> str:
    what = (
        f"chose <code>{esc(decision['candidate_id'])}</code>"
        if decision["decision"] == "chosen"
        else "rejected every member"
    )
    comment = f" — “{esc(decision['comment'])}”" if decision.get("comment") else ""
    return (
        f'<p class="decision"><b>Reviewer decision:</b> {esc(decision["reviewer"])} {what}'
        f" (α = {decision['alpha']:g}, {esc(decision['evaluator'])} ranking,"
        f" {esc(decision['decided_at'])}){comment}</p>"
    )


def member_card(member: ReviewMember) -> str:
    samples = ", ".join(number(s, 1) for s in member.evaluator_scores) or "none"
    stdout, stderr = tail(member.stdout), tail(member.stderr)
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
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    output = f'<h4>stdout (tail)</h4><pre class="output">{esc(stdout) or "(empty)"}</pre>'
    if stderr:
        output += f'<h4>stderr (tail)</h4><pre class="output stderr">{esc(stderr)}</pre>'
    return (
        f'<article class="member" data-candidate-id="{esc(member.candidate_id)}">'
        f'<h3><span class="rank">#{member.rank}</span> <code>{esc(member.candidate_id)}</code>'
        f" {correctness_badge(member.correct)}</h3>"
        f'<dl class="facts">{rows}</dl>'
        f'<h4>Formulation</h4><pre class="formulation">'
        f"{esc((member.formulation or '(none)').strip())}</pre>"
        f'<h4>Code</h4><div class="code">{highlighted_code(member.code)}</div>'
        f"{output}</article>"
    )


def other_candidates(candidates: pd.DataFrame, members: set[str]) -> str:
    rest = candidates[~candidates["candidate_id"].isin(members)]
    if rest.empty:
        return '<p class="rest">Every candidate is in the portfolio.</p>'
    rows = []
    for row in rest.itertuples():
        status = row.execution_status if row.valid else f"⊥ {row.invalid_reason or 'invalid'}"
        correct = None if pd.isna(row.correct) else bool(row.correct)
        rows.append(
            f"<tr><td>{row.rank}</td><td><code>{esc(row.candidate_id)}</code></td>"
            f"<td>{number(row.p, 4)}</td><td>{esc(status)}</td>"
            f"<td>{number(row.objective, 6)}</td><td>{number(row.judge_score, 2)}</td>"
            f"<td>{correctness_badge(correct)}</td></tr>"
        )
    return (
        f'<details class="rest"><summary>{len(rest)} other candidate(s), outside the portfolio'
        "</summary><table><thead><tr><th>rank</th><th>candidate</th><th>p</th><th>run</th>"
        "<th>objective</th><th>judge</th><th>correct</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></details>"
    )


def summary_section(summary: pd.DataFrame, alpha: float) -> str:
    head = "".join(f"<th>{esc(column)}</th>" for column in summary.columns)
    rows = []
    for row in summary.itertuples(index=False):
        cells = "".join(f"<td>{number(v) if isinstance(v, float) else esc(v)}</td>" for v in row)
        rows.append(f"<tr>{cells}</tr>")
    return (
        '<section id="summary"><h2>Dataset summary</h2>'
        f"<p>Portfolios at α = {alpha:g} and of the best s, against s random candidates"
        " (means over problems; shares over problems with a ground truth). Judge scores are"
        " normalized to 0–1; a portfolio's score is its lowest member's.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


FIGURE_CAPTIONS = {
    "fig5_min_judge_kde": "Paper Fig. 5: the lowest judge score in the portfolio of the best s"
    " against s random candidates, per evaluator type; dashed lines are the means.",
    "size_and_coverage_vs_confidence": "Portfolio size and the share of a problem's correct"
    " candidates the portfolio holds, against 1 − α (95% bands over problems).",
    "holds_correct_vs_confidence": "Share of problems whose portfolio holds a correct"
    " candidate, against 1 − α, beside random candidates of the same size, pass@1 and"
    " majority vote.",
}


def figures_section(figures: dict[str, str]) -> str:
    items = "".join(
        f'<figure><img src="{uri}" alt="{esc(name)}"><figcaption>'
        f"{esc(FIGURE_CAPTIONS.get(name, name))}</figcaption></figure>"
        for name, uri in figures.items()
    )
    return f'<section id="figures"><h2>Figures</h2>{items}</section>'


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 1.5rem 3rem; color: #1d2330; }
h1 { font-size: 1.5rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccd; }
h3 { margin: 0 0 .4rem; font-size: 1rem; } h4 { margin: .7rem 0 .2rem; font-size: .85rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem; margin: 0; }
dl.facts dt { color: #5a6275; } dl.facts dd { margin: 0; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
pre.description { background: #f4f5f8; padding: .6rem; border-radius: 4px; font-family: inherit; }
.members { display: grid; grid-auto-flow: column; grid-auto-columns: minmax(26rem, 1fr);
  gap: 1rem; overflow-x: auto; padding-bottom: .6rem; align-items: start; }
.member { border: 1px solid #ccd; border-radius: 6px; padding: .7rem; background: #fff;
  min-width: 0; }
.member pre.formulation, .member pre.output { background: #f7f7f9; padding: .4rem;
  max-height: 18rem; overflow: auto; font-size: 12px; }
.member pre.stderr { background: #fff4f2; }
.member .code { max-height: 28rem; overflow: auto; font-size: 12px; border: 1px solid #eee; }
.member .code pre { white-space: pre; padding: .4rem; }
.rank { color: #5a6275; }
.badge { font-size: .8rem; padding: .05rem .4rem; border-radius: 3px; white-space: nowrap; }
.badge.correct { background: #dff3e3; color: #17622b; }
.badge.wrong { background: #fbe3e1; color: #8a1f14; }
.badge.unknown { background: #eceef2; color: #50586a; }
table { border-collapse: collapse; margin: .5rem 0; font-size: 13px; }
th, td { border: 1px solid #d8dbe3; padding: .2rem .5rem; text-align: right; }
th { background: #f1f2f6; } td:nth-child(-n+2) { text-align: left; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #e2e4ea; }
.decision { background: #eef4ff; padding: .4rem .6rem; border-radius: 4px; }
"""


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
