"""Deployments against a real Prefect server and worker, and the ad-hoc run from the real UI.

The stack comes from `prefect_stack` (tests/plugins/server_fixtures.py): the same code as
`optfolio server up`, on a free loopback port with its own PREFECT_HOME.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import httpx
import pytest

from optfolio import orchestrator
from optfolio.settings import REPO_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

NIGHTLY_CRON = "0 2 * * *"
POOL = "optfolio-process"
RUN_TIMEOUT_S = 240.0  # a small run takes ~15 s; the machine may be busy with other builds
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass(frozen=True)
class DeployedFlow:
    """A flow with `<flow>-nightly` and `<flow>-adhoc` deployments in deployments/prefect.yaml."""

    flow: str
    adhoc_parameters: dict[str, Any]  # small enough to finish in seconds
    out_parameter: str  # the parameter naming the output directory
    parquet: str  # glob under the output directory
    expect: dict[str, list[Any]] = field(default_factory=dict)  # column -> distinct values


# One entry per deployed flow (portfolio_run: add its entry here).
FLOWS = [
    DeployedFlow(
        flow="simulate",
        adhoc_parameters={
            "Ks": [10],
            "seeds": 2,
            "evaluator_errors": [0.0, 0.5],
            "alpha_step": 0.1,
        },
        out_parameter="out",
        parquet="simulation/*.parquet",
        expect={"K": [10], "seed": [0, 1], "evaluator_error": [0.0, 0.5]},
    ),
]


def _api(stack: orchestrator.StackStatus) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, timeout=30.0)


def _deployment(api: httpx.Client, flow: str, name: str) -> dict[str, Any]:
    response = api.get(f"/deployments/name/{flow}/{name}")
    assert response.status_code == 200, f"{flow}/{name}: {response.status_code} {response.text}"
    return response.json()


def _wait_for_run(
    api: httpx.Client, run_id: str, timeout_s: float = RUN_TIMEOUT_S
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        run = api.get(f"/flow_runs/{run_id}").json()
        if run["state_type"] in TERMINAL or time.monotonic() > deadline:
            return run
        time.sleep(1.0)


def _worker_log(stack: orchestrator.StackStatus) -> str:
    log = stack.home / f"worker-{POOL}.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no worker log)"


def _distinct(out: Path, case: DeployedFlow) -> dict[str, list[Any]]:
    files = sorted(out.glob(case.parquet))
    assert files, f"no Parquet matches {out}/{case.parquet}"
    return {
        column: [
            row[0]
            for row in duckdb.sql(
                f'select distinct "{column}" from read_parquet(?) order by 1',
                params=[[str(f) for f in files]],
            ).fetchall()
        ]
        for column in case.expect
    }


@pytest.mark.parametrize("case", FLOWS, ids=lambda case: case.flow)
def test_deployments_are_applied(
    prefect_stack: orchestrator.StackStatus, case: DeployedFlow
) -> None:
    with _api(prefect_stack) as api:
        nightly = _deployment(api, case.flow, f"{case.flow}-nightly")
        adhoc = _deployment(api, case.flow, f"{case.flow}-adhoc")
    for deployment in (nightly, adhoc):
        assert deployment["work_pool_name"] == POOL
        # Local code: the only pull step moves the flow run into this repository.
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
        ]
    [schedule] = nightly["schedules"]
    assert schedule["active"]
    assert schedule["schedule"]["cron"] == NIGHTLY_CRON
    assert schedule["schedule"]["timezone"] == "UTC"
    assert adhoc["schedules"] == []
    # The UI form is built from this schema: every small-run parameter must be a typed field.
    properties = adhoc["parameter_openapi_schema"]["properties"]
    assert set(case.adhoc_parameters) | {case.out_parameter} <= set(properties)
    assert all("type" in properties[name] or "$ref" in str(properties[name]) for name in properties)


@pytest.mark.parametrize("case", FLOWS, ids=lambda case: case.flow)
def test_adhoc_run_from_the_api_completes(
    prefect_stack: orchestrator.StackStatus, case: DeployedFlow, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    parameters = {**case.adhoc_parameters, case.out_parameter: str(out)}
    with _api(prefect_stack) as api:
        adhoc = _deployment(api, case.flow, f"{case.flow}-adhoc")
        response = api.post(
            f"/deployments/{adhoc['id']}/create_flow_run", json={"parameters": parameters}
        )
        assert response.status_code == 201, response.text
        run = _wait_for_run(api, response.json()["id"])
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}\n{_worker_log(prefect_stack)}"
    assert run["parameters"] == parameters
    assert _distinct(out, case) == case.expect


# --- the UI ---------------------------------------------------------------------------------

# Generous per step (a loaded machine renders slowly), bounded as a whole: the test body is
# cut at 3 minutes; the shared server's start-up is not counted (func_only).
UI_TIMEOUT_MS = 45_000
UI_RUN_TIMEOUT_S = 100.0


def _delete_list_items(page: Page, label: str, keep: list[str]) -> None:
    """Delete the items of the array field LABEL whose value is not in KEEP, via each
    item's menu (⋮ → Delete), the way a user would."""
    field_box = page.locator(f"div:has(> div > div > label:text-is('{label}'))").first
    items = field_box.locator("fieldset input")
    for index in reversed(range(items.count())):
        if items.nth(index).input_value() in keep:
            continue
        field_box.locator("fieldset").get_by_role("button", name="Open menu").nth(index).click()
        page.get_by_role("menuitem", name="Delete").click()
    assert [items.nth(i).input_value() for i in range(items.count())] == keep


@pytest.mark.timeout(180, func_only=True)
def test_adhoc_run_from_the_ui(
    prefect_stack: orchestrator.StackStatus, chromium: Browser, tmp_path: Path
) -> None:
    """Deployments → simulate-adhoc → Run → Custom run, change fields, Submit; the run
    completes and its Parquet holds exactly what the form said."""
    out = tmp_path / "ui-out"
    run_name = f"ui-test-{uuid.uuid4().hex[:8]}"
    ui = prefect_stack.ui_url
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{ui}/deployments", wait_until="domcontentloaded")
        page.get_by_role("link", name="simulate-adhoc", exact=True).first.click()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Custom run").click()
        page.get_by_text("Parameters", exact=True).wait_for()

        page.get_by_label("Run Name").fill(run_name)
        page.get_by_label("out (Optional)").fill(str(out))
        page.get_by_label("seeds (Optional)").fill("2")
        page.get_by_label("alpha_step (Optional)").fill("0.1")
        _delete_list_items(page, "Ks (Optional)", keep=["10"])
        _delete_list_items(page, "evaluator_errors (Optional)", keep=["0", "0.5"])
        page.screenshot(path=str(tmp_path / "ui-custom-run-form.png"), full_page=True)
        page.get_by_role("button", name="Submit", exact=True).click()

        # The run as the server recorded it: created by the form, not by this test.
        with _api(prefect_stack) as api:
            run = _wait_for_run(api, _find_run_by_name(api, run_name)["id"], UI_RUN_TIMEOUT_S)
        # ... and as the UI shows it.
        page.goto(f"{ui}/runs/flow-run/{run['id']}", wait_until="domcontentloaded")
        page.get_by_text(run_name, exact=True).first.wait_for()
        page.get_by_text("Completed", exact=True).first.wait_for()
        page.screenshot(path=str(tmp_path / "ui-flow-run-completed.png"))
    finally:
        page.screenshot(path=str(tmp_path / "ui-last-page.png"), full_page=True)
        context.close()
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}\n{_worker_log(prefect_stack)}"
    assert run["parameters"]["out"] == str(out)
    assert run["parameters"]["seeds"] == 2
    assert run["parameters"]["Ks"] == [10]
    assert run["parameters"]["evaluator_errors"] == [0, 0.5]
    assert _distinct(out, FLOWS[0]) == {"K": [10], "seed": [0, 1], "evaluator_error": [0.0, 0.5]}


def _find_run_by_name(api: httpx.Client, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        runs = api.post(
            "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}, "limit": 1}
        ).json()
        if runs:
            return runs[0]
        time.sleep(0.5)
    raise AssertionError(f"the UI created no flow run named {name!r}")
