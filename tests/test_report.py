"""The static review page: every portfolio member on it, nothing fetched from anywhere, every
LLM-written string shown as text, and it renders in headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.compute as pc
import pytest

from optfolio import warehouse
from optfolio.report import CONTENT_SECURITY_POLICY, write_report
from optfolio.store import RunStore, part_name
from tests.plugins.run_fixtures import (
    SYNTHETIC_PROBLEMS,
    SyntheticProblem,
    build_finished_run,
    synthetic_candidate_id,
)
from tests.test_review import CALIBRATED_FLAG, calibrate_run

ALPHA = 0.5
HOSTILE_SCRIPT = '<script>window.__pwned = "yes"</script>'
HOSTILE_PROBLEM = SyntheticProblem(
    f"hostile{HOSTILE_SCRIPT}",  # reaches the formulation and the code of every candidate
    'Maximize x. <img src="https://tracker.example/pixel.png"> </pre><b>bold?</b>',
    10.0,
)
HOSTILE_STDOUT = f"</pre>{HOSTILE_SCRIPT}<a href='http://evil.example/'>click</a>"


class PageParts(HTMLParser):
    """What a browser would make of the page: tags, resource references, member cards, text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.references: list[str] = []
        self.member_ids: list[str] = []
        self.text: list[str] = []
        self.policies: list[str] = []
        # answer cards: their ids, and the member rows of each (candidate, representative?)
        # with whether the row sat inside a <details> (folded)
        self.answer_ids: list[str] = []
        self.answer_members: dict[str, list[tuple[str, bool, bool]]] = {}
        self._open_details = 0
        self.calibrated_badges = 0

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self._open_details -= 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "details":
            self._open_details += 1
        if tag == "article" and "answer" in classes:
            self.answer_ids.append(attributes.get("data-answer-id") or "")
            self.answer_members[self.answer_ids[-1]] = []
        if tag == "tr" and self.answer_ids and attributes.get("data-candidate-id"):
            self.answer_members[self.answer_ids[-1]].append(
                (
                    attributes["data-candidate-id"] or "",
                    "representative" in classes,
                    self._open_details > 0,
                )
            )
        if tag == "span" and {"badge", "calibrated"} <= set(classes):
            self.calibrated_badges += 1
        self.references += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]
        if tag == "meta" and attributes.get("http-equiv") == "Content-Security-Policy":
            self.policies.append(attributes.get("content") or "")
        if tag == "article" and "member" in (attributes.get("class") or "").split():
            self.member_ids.append(attributes.get("data-candidate-id") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> PageParts:
    parts = PageParts()
    parts.feed(page)
    return parts


def portfolio_members(store: RunStore, run_id: str, alpha: float = ALPHA) -> list[str]:
    settings = warehouse.AssemblySettings(alphas=(alpha,))
    with warehouse.connect(store, [run_id], settings) as con:
        rows = con.execute(
            "select candidate_id from portfolios where evaluator = 'llm' order by problem_id, rank"
        ).fetchall()
    return [row[0] for row in rows]


def answer_portfolio_members(
    store: RunStore, run_id: str, alpha: float = ALPHA
) -> dict[str, list[tuple[str, bool]]]:
    """Each answer of the LLM-ranked answer portfolios, best first per problem: its members,
    the representative first and marked."""
    settings = warehouse.AssemblySettings(alphas=(alpha,))
    with warehouse.connect(store, [run_id], settings) as con:
        rows = con.execute(
            "select answer_id, candidate_id, is_representative from review_answer_members"
            " where evaluator = 'llm'"
            " order by problem_id, answer_rank, is_representative desc, rank"
        ).fetchall()
    members: dict[str, list[tuple[str, bool]]] = {}
    for answer_id, candidate_id, representative in rows:
        members.setdefault(answer_id, []).append((candidate_id, representative))
    return members


@pytest.fixture(scope="module")
def report_page(synthetic_finished_run, tmp_path_factory) -> tuple[Path, RunStore, str]:
    store, run_id = synthetic_finished_run
    out = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    written = write_report(store, run_id, out, alpha=ALPHA)
    assert written.path == out and out.is_file()
    assert written.problems == len(SYNTHETIC_PROBLEMS) and written.figures == 3
    return out, store, run_id


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory) -> Path:
    """A run whose problem text, candidate code and program output all carry markup."""
    store, run_id = build_finished_run(
        tmp_path_factory.mktemp("hostile-store"), "hostile", (HOSTILE_PROBLEM,)
    )
    part = store.part_path("executions", run_id, part_name(HOSTILE_PROBLEM.problem_id))
    executions = store.read("executions", [run_id]).drop_columns(["run_id"])
    hostile = pc.if_else(pc.equal(executions["status"], "ok"), HOSTILE_STDOUT, executions["stdout"])
    executions = executions.set_column(
        executions.schema.get_field_index("stdout"), "stdout", hostile
    )
    store.write_part("executions", run_id, part.stem, executions)
    out = tmp_path_factory.mktemp("hostile-report") / "report.html"
    write_report(store, run_id, out, alpha=ALPHA)
    return out


def test_every_portfolio_member_is_on_the_page(report_page) -> None:
    out, store, run_id = report_page
    parts = parse(out.read_text())
    expected = portfolio_members(store, run_id)
    assert parts.member_ids == expected
    # The fixture's documented portfolio at α = 0.5: best, wrong, also_right per problem.
    documented = [
        synthetic_candidate_id(p.problem_id, role)
        for p in sorted(SYNTHETIC_PROBLEMS, key=lambda p: p.problem_id)
        for role in ("best", "wrong", "also_right")
    ]
    assert parts.member_ids == documented
    text = "".join(parts.text)
    for problem in SYNTHETIC_PROBLEMS:
        assert problem.description in text
    assert "✓ correct" in text and "✗ incorrect" in text and "? unknown" in text
    assert "Dataset summary" in text and "pass@1" in text


def test_the_page_needs_nothing_from_the_network(report_page) -> None:
    out, _, _ = report_page
    page = out.read_text()
    parts = parse(page)
    assert parts.tags.count("img") == 3
    assert parts.references, "the page links its figures and sections"
    for reference in parts.references:
        assert reference.startswith(("data:image/png;base64,", "#")), reference[:80]
    assert "script" not in parts.tags and "link" not in parts.tags
    assert "default-src 'none'" in page  # CSP: nothing could be fetched or run anyway
    assert parts.policies == [CONTENT_SECURITY_POLICY]


def test_untrusted_text_is_shown_as_text(hostile_page: Path) -> None:
    page = hostile_page.read_text()
    parts = parse(page)
    assert "script" not in parts.tags
    assert parts.tags.count("img") == 3  # the figures only, not the problem's <img>
    text = "".join(parts.text)
    assert HOSTILE_SCRIPT in text  # in the problem id, the formulation and the code
    assert HOSTILE_STDOUT in text  # in the program output
    assert "</pre><b>bold?</b>" in text
    assert '<img src="https://tracker.example/pixel.png">' in text
    for reference in parts.references:
        assert reference.startswith(("data:image/png;base64,", "#")), reference[:80]


def test_page_renders_in_chromium(chromium, report_page, tmp_path: Path) -> None:
    out, store, run_id = report_page
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    requested: list[str] = []
    page = context.new_page()
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(out.as_uri(), wait_until="load")
        cards = page.locator("article.member")
        assert cards.count() == len(portfolio_members(store, run_id))
        for candidate in portfolio_members(store, run_id):
            card = page.locator(f'article.member[data-candidate-id="{candidate}"]')
            card.scroll_into_view_if_needed()
            assert card.is_visible(), candidate
            box = card.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 200, box
        figures = page.locator("#figures img")
        assert figures.count() == 3
        # decoded images have a size: the data URIs hold real PNGs
        widths = figures.evaluate_all("images => images.map(image => image.naturalWidth)")
        assert all(width > 400 for width in widths), widths
        screenshot = tmp_path / "report.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 50_000
    finally:
        context.close()
    assert all(url.startswith(("file:", "data:")) for url in requested), requested


def test_hostile_page_runs_no_script_in_chromium(chromium, hostile_page: Path) -> None:
    page = chromium.new_page()
    try:
        page.goto(hostile_page.as_uri(), wait_until="load")
        assert page.evaluate("window.__pwned") is None
        code = page.locator("article.member .code").first
        assert "<script>" in code.inner_text()
    finally:
        page.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("optfolio")
    return subprocess.run(
        [str(cli), "report", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


def test_cli_writes_the_page(synthetic_finished_run, tmp_path: Path) -> None:
    store, run_id = synthetic_finished_run
    out = tmp_path / "page.html"
    done = run_cli("--store", str(store.root), "--run", run_id, "--out", str(out), "--alpha", "1")
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout and "4 problems" in done.stdout
    # α = 1: the single best candidate of each problem with a valid one
    assert parse(out.read_text()).member_ids == portfolio_members(store, run_id, alpha=1.0)
    assert len(portfolio_members(store, run_id, alpha=1.0)) == 4


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--run", "no-such-run"], "run 'no-such-run' is not in store"),
        (["--run", "RUN", "--alpha", "1.5"], "--alpha 1.5: α must lie in [0, 1]"),
        (["--run", "RUN", "--evaluator", "human"], "--evaluator 'human'"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(
    synthetic_finished_run, tmp_path: Path, arguments: list[str], message: str
) -> None:
    store, run_id = synthetic_finished_run
    arguments = [run_id if a == "RUN" else a for a in arguments]
    out = tmp_path / "page.html"
    done = run_cli("--store", str(store.root), "--out", str(out), *arguments)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    if "no-such-run" in arguments:
        assert f"(runs there: {run_id})" in done.stderr
    assert not out.exists()


def test_cli_refuses_a_missing_store(tmp_path: Path) -> None:
    done = run_cli("--store", str(tmp_path / "nowhere"), "--run", "r", "--out", "x.html")
    assert done.returncode == 2
    assert f"--store {tmp_path / 'nowhere'}: no such directory" in done.stderr


def test_a_reviewer_decision_is_shown_with_the_portfolio(tmp_path: Path) -> None:
    from optfolio.review import load_reviews, make_decision, write_decision

    store, run_id = build_finished_run(tmp_path / "store", "decided")
    (review,) = load_reviews(store, run_id, ALPHA, "llm", ["diet"])
    chosen = synthetic_candidate_id("diet", "also_right")
    write_decision(
        store, make_decision(review, chosen, comment="simplest <i>model</i>", reviewer="ana")
    )
    out = tmp_path / "report.html"
    write_report(store, run_id, out, alpha=ALPHA)
    parts = parse(out.read_text())
    text = "".join(parts.text)
    assert f"Reviewer decision: ana chose {chosen}" in text
    assert "simplest <i>model</i>" in text and "i" not in parts.tags


def test_the_answer_portfolio_is_beside_the_candidates_with_members_folded(report_page) -> None:
    out, store, run_id = report_page
    parts = parse(out.read_text())
    expected = answer_portfolio_members(store, run_id)
    assert parts.answer_ids == list(expected)  # each answer once, per problem best first
    for answer_id, members in expected.items():
        shown = parts.answer_members[answer_id]
        assert [(c, rep) for c, rep, _ in shown] == members
        assert all(folded for _, _, folded in shown), answer_id
        assert sum(rep for _, rep in members) == 1
    # the fixture's answers: best and also_right fold into one, best representing it
    diet = [
        answer_id
        for answer_id, members in expected.items()
        if synthetic_candidate_id("diet", "best") in dict(members)
    ]
    assert expected[diet[0]] == [
        (synthetic_candidate_id("diet", "best"), True),
        (synthetic_candidate_id("diet", "also_right"), False),
    ]
    text = "".join(parts.text)
    assert "Answer-level portfolio" in text and "Representative c-" in text
    # the candidate-level portfolio is as before (test_every_portfolio_member_is_on_the_page)
    assert parts.member_ids == portfolio_members(store, run_id)
    assert parts.calibrated_badges == 0 and "calibrated α̂" not in text


def test_the_calibrated_alpha_is_flagged_only_on_a_calibrated_run(tmp_path: Path) -> None:
    store, run_id = build_finished_run(tmp_path / "store", "calibrated")
    calibrate_run(store, run_id, alpha=ALPHA, delta=0.1, evaluator="llm", unit="answer")
    out = tmp_path / "report.html"
    write_report(store, run_id, out, alpha=ALPHA)
    page = out.read_text()
    parts = parse(page)
    text = "".join(parts.text)
    assert "calibrated α̂" in text and CALIBRATED_FLAG in text
    # one flag per problem, on the answer-level portfolio (the calibrated unit) only
    assert parts.calibrated_badges == len(SYNTHETIC_PROBLEMS)
    for section in page.split('<section class="problem"')[1:]:
        candidates, answers = section.split('<div class="answer-portfolio">')
        assert "badge calibrated" not in candidates
        assert answers.count("badge calibrated") == 1
    # at another α the page names α̂ but flags no portfolio
    elsewhere = tmp_path / "elsewhere.html"
    write_report(store, run_id, elsewhere, alpha=0.3)
    other = parse(elsewhere.read_text())
    assert other.calibrated_badges == 0
    assert "render it with --alpha 0.5 --evaluator llm" in "".join(other.text)
