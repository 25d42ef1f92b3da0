"""Reviewing a finished run without Prefect's UI: the portfolio a reviewer sees, validated
decisions, the `decisions` table and view, the review form's schema and `optfolio review`.

The run is the synthetic one of tests/plugins/run_fixtures.py (no LLM, no Docker): with the
LLM evaluator and α = 0.5 each problem's portfolio is `best`, `wrong`, `also_right`. `best`
and `also_right` find the same objective, so they are one answer; at α = 0.5 the answer
portfolio is {`wrong`} then {`best`, `also_right`} (ranked by the mean of all their samples,
72.5 against 71.25), `best` representing the second.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from optfolio import warehouse
from optfolio.calibration import CalibrationRecord, pin_run_calibration, save_calibration
from optfolio.errors import InputError
from optfolio.review import (
    REJECT_ALL,
    ProblemReview,
    ReviewAnswer,
    ReviewParameters,
    artifact_key,
    decided_problems,
    load_reviews,
    make_decision,
    read_decisions,
    review_markdown,
    summary_markdown,
    write_decision,
)
from optfolio.runs import manifest_path, write_json_atomically
from optfolio.store import RunStore
from tests.plugins.run_fixtures import SYNTHETIC_PROBLEMS, build_finished_run
from tests.plugins.run_fixtures import synthetic_candidate_id as cid

OPTFOLIO = [sys.executable, "-c", "from cli import main; main()"]


@pytest.fixture
def finished_run(tmp_path: Path) -> tuple[RunStore, str]:
    """A store of our own: these tests write decisions."""
    return build_finished_run(tmp_path / "store")


def _review(store: RunStore, run_id: str, problem: str, alpha: float = 0.5) -> ProblemReview:
    [review] = load_reviews(store, run_id, alpha, problem_ids=[problem])
    return review


def _answer_review(
    store: RunStore, run_id: str, problem: str, alpha: float = 0.5, evaluator: str = "llm"
) -> ProblemReview:
    [review] = load_reviews(store, run_id, alpha, evaluator, [problem], unit="answer")
    return review


def _answer_of(review: ProblemReview, problem: str, role: str) -> ReviewAnswer:
    """The answer holding the candidate playing ROLE."""
    wanted = cid(problem, role)
    return next(a for a in review.answers if wanted in [m.candidate_id for m in a.members])


def _optfolio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OPTFOLIO, *args], capture_output=True, text=True, timeout=120)


CALIBRATED_FLAG = "calibrated: holds a correct model with probability ≥ 90% on problems like these"


def calibrate_run(
    store: RunStore,
    run_id: str,
    alpha: float = 0.5,
    delta: float = 0.1,
    evaluator: str = "llm",
    unit: str = "answer",
) -> CalibrationRecord:
    """RUN_ID as if started with ``calibration=<name>``: the stored calibration, the manifest
    naming it and the run's own copy (the numbers besides α̂, δ, evaluator and unit are
    plausible, not computed)."""
    record = CalibrationRecord(
        name="cal-review-test",
        alpha=alpha,
        delta=delta,
        evaluator=evaluator,
        unit=unit,
        runs=("labelled-run",),
        problems=29,
        problems_never=1,
        floor=1 / 29,
        achievable_delta=2 / 30,
        empirical_coverage=0.93,
        mean_size=2.5,
        settings={},
        created_at=datetime.now(UTC),
    )
    save_calibration(store, record)
    path = manifest_path(store, run_id)
    manifest = json.loads(path.read_text())
    manifest["parameters"]["calibration"] = record.name
    write_json_atomically(path, manifest)
    pin_run_calibration(store, run_id, record.name)
    return record


# ---- the portfolio a reviewer sees -------------------------------------------------------------


def test_portfolios_are_the_best_ranked_members_reaching_one_minus_alpha(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = synthetic_finished_run
    reviews = load_reviews(store, run_id, alpha=0.5)
    assert [r.problem_id for r in reviews] == sorted(p.problem_id for p in SYNTHETIC_PROBLEMS)
    for review in reviews:
        roles = ["best", "wrong", "also_right"]
        assert review.member_ids == [cid(review.problem_id, role) for role in roles]
        assert [m.rank for m in review.members] == [1, 2, 3]
        assert review.target_reached
    # α = 1 keeps the single best candidate; α = 0 every valid one, never ⊥
    assert _review(store, run_id, "diet", alpha=1.0).member_ids == [cid("diet", "best")]
    everything = _review(store, run_id, "diet", alpha=0.0).member_ids
    assert cid("diet", "crashes") in everything
    assert cid("diet", "invalid") not in everything


def test_members_carry_formulation_code_output_scores_and_correctness(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = synthetic_finished_run
    best, wrong, _ = _review(store, run_id, "furniture").members
    assert "Formulation (best)" in (best.formulation or "")
    assert "import pulp" in (best.code or "")
    assert best.execution_status == "ok" and best.objective == 120.0
    assert "OBJECTIVE: 120.0" in (best.stdout or "")
    assert best.evaluator_scores == (90.0, 85.0) and best.evaluator_score == 87.5
    assert best.judge_score == pytest.approx(0.95)
    assert (best.correct, wrong.correct) == (True, False)
    # no ground truth: correctness unknown, not false
    open_ended = _review(store, run_id, "open-ended")
    assert [m.correct for m in open_ended.members] == [None, None, None]
    crashes = _review(store, run_id, "diet", alpha=0.0).members[-1]
    assert crashes.execution_status == "error" and "RuntimeError" in (crashes.stderr or "")


def test_the_artifact_markdown_shows_every_member_and_no_other(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = synthetic_finished_run
    text = review_markdown(_review(store, run_id, "shipping"))
    for role in ("best", "wrong", "also_right"):
        assert (
            f"## #{['best', 'wrong', 'also_right'].index(role) + 1} `{cid('shipping', role)}`"
            in text
        )
    assert cid("shipping", "crashes") not in text and cid("shipping", "invalid") not in text
    assert "OBJECTIVE: 374.0" in text.replace("374.00000000000006", "374.0")  # wrong's output
    assert "known optimum: 340" in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"evaluator": "human"}, "evaluator 'human'"),
        ({"run_id": "no-such-run"}, "run 'no-such-run': not in store"),
        ({"problem_ids": ["diet", "nope"]}, "no problem(s) 'nope'"),
    ],
)
def test_bad_review_requests_are_refused_naming_the_field(
    synthetic_finished_run: tuple[RunStore, str], arguments: dict, message: str
) -> None:
    store, run_id = synthetic_finished_run
    with pytest.raises(InputError, match=re.escape(message)):
        load_reviews(store, **({"run_id": run_id} | arguments))


# ---- decisions ---------------------------------------------------------------------------------


def test_a_choice_outside_the_portfolio_is_refused_naming_problem_and_members(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = synthetic_finished_run
    narrow = _review(store, run_id, "diet", alpha=1.0)  # `best` alone
    for outsider in (cid("diet", "wrong"), cid("diet", "invalid"), cid("furniture", "best")):
        with pytest.raises(InputError) as refused:
            make_decision(narrow, outsider, reviewer="r")
        message = str(refused.value)
        assert "problem 'diet'" in message and f"candidate {outsider!r}" in message
        assert "not in the portfolio at alpha=1" in message and cid("diet", "best") in message


@pytest.mark.parametrize("choice", [None, REJECT_ALL])
def test_rejecting_needs_a_comment(
    synthetic_finished_run: tuple[RunStore, str], choice: str | None
) -> None:
    store, run_id = synthetic_finished_run
    review = _review(store, run_id, "diet")
    with pytest.raises(InputError, match=r"problem 'diet': comment: say why"):
        make_decision(review, choice, comment="   ")
    decision = make_decision(review, choice, comment=" all three misread the protein bound ")
    assert (decision.decision, decision.candidate_id) == ("rejected", None)
    assert decision.comment == "all three misread the protein bound"
    assert decision.reviewer == "anonymous"


def test_deciding_again_replaces_the_decision(finished_run: tuple[RunStore, str]) -> None:
    store, run_id = finished_run
    review = _review(store, run_id, "diet")
    write_decision(store, make_decision(review, cid("diet", "wrong"), reviewer="ann"))
    write_decision(store, make_decision(review, None, comment="none is right", reviewer="bob"))
    write_decision(store, make_decision(review, cid("diet", "also_right"), reviewer="cy"))
    [decision] = read_decisions(store, run_id)
    assert decision["candidate_id"] == cid("diet", "also_right")
    assert decision["reviewer"] == "cy" and decision["decision"] == "chosen"
    assert len(store.parts("decisions", run_id)) == 1
    assert decided_problems(store, run_id) == {"diet"}


def test_the_decisions_view_joins_the_chosen_candidates_outcome(
    finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = finished_run
    choices = {"diet": "best", "furniture": "wrong", "open-ended": "best"}
    for problem, role in choices.items():
        review = _review(store, run_id, problem)
        write_decision(store, make_decision(review, cid(problem, role), reviewer="r"))
    review = _review(store, run_id, "shipping")
    write_decision(store, make_decision(review, REJECT_ALL, comment="no", source="ui"))
    with warehouse.connect(store, [run_id]) as con:
        rows = con.sql(
            "select problem_id, decision, source, correct, objective from decisions"
            " order by problem_id"
        ).fetchall()
    assert rows == [
        ("diet", "chosen", "cli", True, 4.0),
        ("furniture", "chosen", "cli", False, pytest.approx(132.0)),
        ("open-ended", "chosen", "cli", None, 10.0),  # no ground truth
        ("shipping", "rejected", "ui", None, None),
    ]


def test_a_run_without_decisions_has_an_empty_decisions_view(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = synthetic_finished_run
    with warehouse.connect(store, [run_id]) as con:
        assert con.sql("select count(*) from decisions").fetchall() == [(0,)]
        columns = {c[0] for c in con.sql("describe decisions").fetchall()}
        # the assembled views still work beside it
        [(quality_rows,)] = con.sql("select count(*) from quality").fetchall()
    assert quality_rows > 0
    assert {"candidate_id", "decision", "source", "correct", "judge_score"} <= columns


# ---- the form and the artifact key --------------------------------------------------------------


def test_the_form_offers_the_members_best_first_and_reject_all(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    from tasks.review import decision_form

    store, run_id = synthetic_finished_run
    review = _review(store, run_id, "diet")
    form = decision_form(review, reviewer="ann", problem="comment: say why")
    schema = form.model_json_schema()
    assert schema["properties"]["candidate"]["enum"] == [*review.member_ids, REJECT_ALL]
    assert schema["required"] == ["candidate"]
    assert schema["properties"]["reviewer"]["default"] == "ann"
    assert "Not recorded: comment: say why" in form._description
    assert form(candidate=review.member_ids[1]).comment == ""
    with pytest.raises(ValueError, match="candidate"):
        form(candidate=cid("diet", "invalid"))


def test_artifact_keys_follow_prefects_rules_and_stay_distinct() -> None:
    keys = [
        artifact_key("synthetic-run", "diet"),
        artifact_key("run-20261125T195600Z-3f9a", "nl4opt/17"),
        artifact_key("run-20261125T195600Z-3f9a", "NL4OPT 17"),
    ]
    assert keys[0] == "review-synthetic-run-diet"
    assert all(re.fullmatch(r"[a-z0-9-]+", key) for key in keys)
    assert len(set(keys)) == len(keys)


# ---- optfolio review ----------------------------------------------------------------------------


def test_cli_show_decide_list(finished_run: tuple[RunStore, str]) -> None:
    store, run_id = finished_run
    common = ["--store", str(store.root), "--run", run_id]
    shown = _optfolio("review", "show", *common, "--problem", "diet")
    assert shown.returncode == 0, shown.stderr
    assert cid("diet", "wrong") in shown.stdout and cid("diet", "crashes") not in shown.stdout
    assert "decided: no" in shown.stdout

    chosen = cid("diet", "also_right")
    decided = _optfolio(
        "review", "decide", *common, "--problem", "diet", "--choose", chosen, "--reviewer", "ann"
    )
    assert decided.returncode == 0, decided.stderr
    assert f"diet: chose {chosen}" in decided.stdout

    listed = _optfolio("review", "list", "--store", str(store.root), "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["problem_id"], row["candidate_id"], row["source"]) == ("diet", chosen, "cli")
    assert row["reviewer"] == "ann" and row["correct"] is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--reject"], "problem 'diet': comment: say why"),
        (["--choose", "c-nope"], "problem 'diet': candidate 'c-nope' is not in the portfolio"),
        ([], "problem 'diet': give exactly one of --choose CANDIDATE or --reject"),
        (["--choose", "c-x", "--reject"], "give exactly one of"),
        (["--choose", "c-x", "--alpha", "2"], "alpha"),
    ],
)
def test_cli_refuses_bad_decisions_in_one_line(
    synthetic_finished_run: tuple[RunStore, str], options: list[str], message: str
) -> None:
    store, run_id = synthetic_finished_run
    done = _optfolio(
        "review", "decide", "--store", str(store.root), "--run", run_id, "--problem", "diet",
        *options,
    )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("optfolio: error: ") and message in line
    assert not store.parts("decisions", run_id)  # the shared store stays undecided


# ---- the answer-level portfolio (--unit answer) -------------------------------------------------


def test_the_default_unit_is_the_candidate_and_unchanged(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = synthetic_finished_run
    assert ReviewParameters(run_id="r").unit == "candidate"
    review = _review(store, run_id, "furniture")
    assert review.unit == "candidate" and review.answers == ()
    roles = ["best", "wrong", "also_right"]
    assert review.member_ids == review.choices == [cid("furniture", role) for role in roles]
    for text in (summary_markdown(review), review_markdown(review)):
        assert "answer-" not in text and "★" not in text
    assert "| # | candidate | run |" in summary_markdown(review)


def test_equal_objectives_are_one_answer_represented_by_its_best_ranked_member(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = synthetic_finished_run
    candidates = {m.candidate_id: m for m in _review(store, run_id, "furniture", 0.0).members}
    review = _answer_review(store, run_id, "furniture")
    assert review.unit == "answer" and review.target_reached
    assert [a.rank for a in review.answers] == [1, 2]
    right = _answer_of(review, "furniture", "best")
    wrong = _answer_of(review, "furniture", "wrong")
    assert [a.answer_id for a in review.answers] == [wrong.answer_id, right.answer_id]
    # best and also_right both find 120: one answer, best (ranked 1st by the LLM) represents it
    same = sorted([cid("furniture", "best"), cid("furniture", "also_right")])
    assert sorted(m.candidate_id for m in right.members) == same
    assert right.answer_id == f"answer-{same[0]}"
    assert right.representative_id == right.members[0].candidate_id == cid("furniture", "best")
    assert right.representative.formulation and "(best)" in right.representative.formulation
    assert [m.rank for m in right.members] == [1, 3]  # their own ranks among candidates
    assert (right.n_candidates, right.n_samples, right.evaluator_samples) == (2, 2, 4)
    assert right.p == pytest.approx(sum(candidates[c].p for c in same))
    assert right.evaluator_score == pytest.approx((90 + 85 + 60 + 50) / 4)
    assert right.judge_score == pytest.approx(((95.05 - 1) / 99 + (80.2 - 1) / 99) / 2)
    assert (right.objective, right.correct, wrong.correct) == (120.0, True, False)
    also_right = right.members[1]
    assert also_right.execution_status == "ok" and "OBJECTIVE: 120.0" in (also_right.stdout or "")
    # what a choice records: each answer's representative
    assert review.member_ids == [a.representative_id for a in review.answers]
    assert review.choices == [a.answer_id for a in review.answers]
    # α = 0: every valid answer, each candidate in one answer only, never ⊥; a crash is its own
    everything = _answer_review(store, run_id, "furniture", alpha=0.0)
    held = [m.candidate_id for a in everything.answers for m in a.members]
    assert len(held) == len(set(held)) == 4 and cid("furniture", "invalid") not in held
    crash = _answer_of(everything, "furniture", "crashes")
    assert (crash.n_candidates, crash.correct, crash.objective) == (1, False, None)


def test_the_answer_listing_shows_each_answer_once_with_its_members_under_it(
    synthetic_finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = synthetic_finished_run
    review = _answer_review(store, run_id, "shipping")
    text = summary_markdown(review)
    assert text.startswith("**shipping**: answer portfolio of 2 at α = 0.5")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "answer-" in line]
    assert [row.split(" | ")[1] for row in rows] == review.choices  # each once, best first
    folded: dict[str, list[tuple[str, bool]]] = {}
    for line in text.splitlines():
        if heading := re.match(r"- #\d+ `(answer-[^`]+)`", line):
            folded[heading[1]] = []
        elif member := re.match(r"  - (★ )?`(c-[^`]+)`", line):
            folded[list(folded)[-1]].append((member[2], member[1] is not None))
    assert list(folded) == review.choices
    for answer in review.answers:
        expected = [
            (m.candidate_id, m.candidate_id == answer.representative_id) for m in answer.members
        ]
        assert folded[answer.answer_id] == expected
    assert sum(marked for rows in folded.values() for _, marked in rows) == len(review.answers)
    # the artifact: each answer once, in full by its representative only
    full = review_markdown(review)
    for answer in review.answers:
        assert full.count(f"## #{answer.rank} answer `{answer.answer_id}`") == 1
        assert full.count(f"### Representative `{answer.representative_id}`") == 1
    assert "Formulation (best)" in full and "Formulation (also_right)" not in full


def test_choosing_an_answer_records_its_representative(finished_run: tuple[RunStore, str]) -> None:
    store, run_id = finished_run
    review = _answer_review(store, run_id, "diet")
    right = _answer_of(review, "diet", "best")
    decision = make_decision(review, right.answer_id, reviewer="ann")
    assert (decision.decision, decision.candidate_id) == ("chosen", cid("diet", "best"))
    # the representative's own id names the same answer
    assert make_decision(review, cid("diet", "best")).candidate_id == cid("diet", "best")
    # a member that does not represent its answer is no choice here; nor a candidate id at all
    for outsider in (cid("diet", "also_right"), cid("diet", "crashes"), "answer-c-nope"):
        with pytest.raises(InputError) as refused:
            make_decision(review, outsider)
        message = str(refused.value)
        assert f"problem 'diet': answer {outsider!r} is not in the answer portfolio" in message
        assert "alpha=0.5" in message and right.answer_id in message
    write_decision(store, decision)
    [row] = read_decisions(store, run_id)
    assert (row["candidate_id"], row["correct"], row["alpha"]) == (cid("diet", "best"), True, 0.5)


def test_the_answer_form_offers_the_answers(synthetic_finished_run: tuple[RunStore, str]) -> None:
    from tasks.review import decision_form

    store, run_id = synthetic_finished_run
    review = _answer_review(store, run_id, "diet")
    schema = decision_form(review, reviewer="ann").model_json_schema()
    candidate = schema["properties"]["candidate"]
    assert candidate["enum"] == [*review.choices, REJECT_ALL]
    assert candidate["title"] == "Answer" and "representative" in candidate["description"]
    assert all(choice.startswith("answer-") for choice in review.choices)


def test_the_calibrated_portfolio_is_flagged_and_no_other(
    finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = finished_run
    uncalibrated = _answer_review(store, run_id, "diet")
    assert uncalibrated.calibration is None and "calibrated" not in summary_markdown(uncalibrated)
    calibrate_run(store, run_id, alpha=0.5, delta=0.1, evaluator="llm", unit="answer")
    calibrated = _answer_review(store, run_id, "diet")
    assert calibrated.calibration_flag == CALIBRATED_FLAG
    assert CALIBRATED_FLAG in summary_markdown(calibrated)
    # another α, ranking or unit: not the calibrated portfolio
    others = [
        _review(store, run_id, "diet"),
        _answer_review(store, run_id, "diet", alpha=0.4),
        _answer_review(store, run_id, "diet", evaluator="generator"),
    ]
    for other in others:
        assert other.calibration is None and "calibrated" not in summary_markdown(other)


def test_cli_review_by_answer(finished_run: tuple[RunStore, str]) -> None:
    import typer.main

    from cli import app

    show = typer.main.get_command(app).commands["review"].commands["show"]  # type: ignore[attr-defined]
    [unit] = [p for p in show.params if "--unit" in p.opts]
    assert unit.default == "candidate"
    assert unit.help == ReviewParameters.model_fields["unit"].description

    store, run_id = finished_run
    common = ["--store", str(store.root), "--run", run_id, "--unit", "answer"]
    review = _answer_review(store, run_id, "diet")
    right = _answer_of(review, "diet", "best")
    shown = _optfolio("review", "show", *common, "--problem", "diet")
    assert shown.returncode == 0, shown.stderr
    assert "answer portfolio of 2" in shown.stdout and f"★ `{cid('diet', 'best')}`" in shown.stdout
    assert f"  - `{cid('diet', 'also_right')}`" in shown.stdout  # folded, not marked
    decided = _optfolio(
        "review", "decide", *common, "--problem", "diet", "--choose", right.answer_id
    )
    assert decided.returncode == 0, decided.stderr
    assert (
        f"diet: chose answer {right.answer_id}, recorded as its representative"
        f" {cid('diet', 'best')}" in decided.stdout
    )
    [row] = read_decisions(store, run_id)
    assert row["candidate_id"] == cid("diet", "best")
