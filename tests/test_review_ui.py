"""The review flow against a real Prefect server and worker, decided in the real UI.

A finished synthetic run (no LLM, no Docker) is reviewed through the `review-adhoc`
deployment: its flow run publishes an artifact per problem and pauses with a form; headless
Chromium opens the paused run, Resume, chooses a candidate in the form's dropdown and
submits; the flow run resumes, records the decision and completes, and the `decisions` view
holds the choice with source 'ui'.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from optfolio.review import (
    REJECT_ALL,
    artifact_key,
    load_reviews,
    make_decision,
    read_decisions,
    write_decision,
)
from optfolio.settings import REPO_ROOT
from servers import prefect_services
from tests.plugins.run_fixtures import build_finished_run, synthetic_candidate_id
from tests.test_deployments import TERMINAL, UI_TIMEOUT_MS, _api, _deployment, _worker_log

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

DOCS_SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "review-form.png"
PAUSE_TIMEOUT_S = 180.0  # worker pick-up, flow start and three small tasks on a busy machine
RESUME_TIMEOUT_S = 90.0  # the run polls every 2 s, then writes one decision


def _start_review(api: httpx.Client, parameters: dict[str, Any]) -> str:
    """A flow run of the review-adhoc deployment with PARAMETERS (the fields of the flow's one
    parameter, a ReviewParameters); returns its id."""
    deployment = _deployment(api, "review", "review-adhoc")
    created = api.post(
        f"/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"parameters": parameters}},
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _wait_for_state(
    api: httpx.Client, flow_run_id: str, wanted: set[str], timeout_s: float
) -> dict[str, Any]:
    """The flow run once its state type is in WANTED (or terminal, or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = api.get(f"/flow_runs/{flow_run_id}").json()
        if run["state_type"] in wanted | TERMINAL or time.monotonic() > deadline:
            return run
        time.sleep(1.0)


def _open_resume_form(page: Page) -> None:
    """The run page's actions menu (⋮) → Resume. A click that lands before the page has
    wired its handlers opens nothing (seen on a loaded machine): open the menu again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    resume = page.get_by_role("menuitem", name="Resume")
    for _attempt in range(5):
        page.locator("[data-slot=dropdown-menu-trigger]").first.click()
        try:
            resume.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")  # close a menu that opened without Resume yet
    resume.click()


def test_review_adhoc_deployment_is_applied(prefect_stack: prefect_services.StackStatus) -> None:
    with _api(prefect_stack) as api:
        deployment = _deployment(api, "review", "review-adhoc")
    assert deployment["work_pool_name"] == "optfolio-process"
    assert deployment["schedules"] == []
    schema = deployment["parameter_openapi_schema"]
    assert schema["required"] == ["parameters"]  # the flow's one parameter: a ReviewParameters
    ref = schema["properties"]["parameters"]["$ref"]
    model = schema["definitions"][ref.rsplit("/", 1)[-1]]
    assert {"run_id", "store", "alpha", "problem_ids", "reviewer"} <= set(model["properties"])
    assert model["required"] == ["run_id"]


@pytest.mark.timeout(360, func_only=True)
def test_review_decided_in_the_ui(
    prefect_stack: prefect_services.StackStatus, chromium: Browser, tmp_path: Path
) -> None:
    store, run_id = build_finished_run(tmp_path / "store")
    chosen = synthetic_candidate_id("diet", "wrong")  # rank 2: not the form's first option
    parameters = {
        "run_id": run_id,
        "store": str(store.root),
        "problem_ids": ["diet"],
        "reviewer": "ui-test",
    }
    with _api(prefect_stack) as api:
        flow_run_id = _start_review(api, parameters)
        run = _wait_for_state(api, flow_run_id, {"PAUSED"}, PAUSE_TIMEOUT_S)
        assert run["state_type"] == "PAUSED", f"{run['state_type']}\n{_worker_log(prefect_stack)}"
        artifact = api.get(f"/artifacts/{artifact_key(run_id, 'diet')}/latest")
        assert artifact.status_code == 200, artifact.text
        assert chosen in artifact.json()["data"]  # the whole portfolio is published

    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        # The paused run as the UI lists it, then its page.
        page.goto(f"{prefect_stack.ui_url}/runs", wait_until="domcontentloaded")
        listed = page.get_by_role("link", name=run["name"], exact=True).first
        listed.wait_for()
        assert (listed.get_attribute("href") or "").endswith(f"/runs/flow-run/{flow_run_id}")
        # Follow the listed link by address: a chart above the list can take the click.
        page.goto(f"{prefect_stack.ui_url}/runs/flow-run/{flow_run_id}")
        page.get_by_text("Paused", exact=True).first.wait_for()
        _open_resume_form(page)
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Provide input to resume").wait_for()
        # The enum of candidates is a select: a button that opens a listbox of options.
        dialog.locator("[aria-haspopup=listbox]").first.click()
        page.get_by_role("option", name=chosen, exact=True).click()
        dialog.get_by_role("textbox").first.fill("the second model reads the data right")
        page.screenshot(path=str(tmp_path / "review-form.png"))
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOT))
        dialog.get_by_role("button", name="Resume", exact=True).click()
        page.get_by_text("Completed", exact=True).first.wait_for(timeout=RESUME_TIMEOUT_S * 1000)
        page.screenshot(path=str(tmp_path / "review-completed.png"))
    finally:
        page.screenshot(path=str(tmp_path / "review-last-page.png"), full_page=True)
        (tmp_path / "review-last-page.html").write_text(page.content())
        context.close()

    with _api(prefect_stack) as api:
        run = _wait_for_state(api, flow_run_id, set(), RESUME_TIMEOUT_S)
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}\n{_worker_log(prefect_stack)}"
    [decision] = read_decisions(store, run_id)
    assert decision["problem_id"] == "diet"
    assert decision["decision"] == "chosen"
    assert decision["candidate_id"] == chosen
    assert decision["source"] == "ui"
    assert decision["reviewer"] == "ui-test"
    assert decision["comment"] == "the second model reads the data right"
    assert decision["correct"] is False  # the view joins the outcome: this one is 10% off


@pytest.mark.timeout(300, func_only=True)
def test_review_asks_again_after_a_refused_answer_and_skips_decided_problems(
    prefect_stack: prefect_services.StackStatus, tmp_path: Path
) -> None:
    """Answers through the API, as the UI sends them: a rejection without a comment is refused
    and the run pauses again; a problem decided beforehand (from the CLI) is not asked."""
    store, run_id = build_finished_run(tmp_path / "store")
    [furniture] = load_reviews(store, run_id, problem_ids=["furniture"])
    write_decision(store, make_decision(furniture, furniture.member_ids[0], reviewer="cli-user"))
    parameters = {"run_id": run_id, "store": str(store.root), "problem_ids": ["furniture", "diet"]}
    with _api(prefect_stack) as api:
        flow_run_id = _start_review(api, parameters)
        first_pause = _wait_for_state(api, flow_run_id, {"PAUSED"}, PAUSE_TIMEOUT_S)
        assert first_pause["state_type"] == "PAUSED", _worker_log(prefect_stack)

        refused = {"candidate": REJECT_ALL, "comment": "", "reviewer": "api"}
        resumed = api.post(f"/flow_runs/{flow_run_id}/resume", json={"run_input": refused})
        assert resumed.json()["status"] == "ACCEPT", resumed.text
        second_pause = _wait_for_new_pause(api, flow_run_id, first_pause["state"]["id"])
        assert second_pause["state_type"] == "PAUSED", _worker_log(prefect_stack)

        accepted = refused | {"comment": "the protein bound is misread by all three"}
        resumed = api.post(f"/flow_runs/{flow_run_id}/resume", json={"run_input": accepted})
        assert resumed.json()["status"] == "ACCEPT", resumed.text
        run = _wait_for_state(api, flow_run_id, set(), RESUME_TIMEOUT_S)
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}\n{_worker_log(prefect_stack)}"
    decisions = {row["problem_id"]: row for row in read_decisions(store, run_id)}
    assert decisions["diet"]["decision"] == "rejected"
    assert decisions["diet"]["comment"] == "the protein bound is misread by all three"
    assert decisions["diet"]["source"] == "ui"
    assert decisions["furniture"]["source"] == "cli"  # decided before: never asked, unchanged


def _wait_for_new_pause(api: httpx.Client, flow_run_id: str, old_state_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RESUME_TIMEOUT_S
    while True:
        run = api.get(f"/flow_runs/{flow_run_id}").json()
        new_pause = run["state_type"] == "PAUSED" and run["state"]["id"] != old_state_id
        if new_pause or run["state_type"] in TERMINAL or time.monotonic() > deadline:
            return run
        time.sleep(1.0)
