"""Reviewing a finished run without Prefect's UI: the portfolio a reviewer sees, validated
decisions, the `decisions` table and view, the review form's schema and `optfolio review`.

The run is the synthetic one of tests/plugins/run_fixtures.py (no LLM, no Docker): with the
LLM evaluator and α = 0.5 each problem's portfolio is `best`, `wrong`, `also_right`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from optfolio import warehouse
from optfolio.errors import InputError
from optfolio.review import (
    REJECT_ALL,
    ProblemReview,
    artifact_key,
    decided_problems,
    load_reviews,
    make_decision,
    read_decisions,
    review_markdown,
    write_decision,
)
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


def _optfolio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OPTFOLIO, *args], capture_output=True, text=True, timeout=120)


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
