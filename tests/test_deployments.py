"""Deployments against a real Prefect server and worker, and ad-hoc runs from the real UI.

The stack comes from `prefect_stack` (tests/plugins/server_fixtures.py): the same code as
`optfolio server up`, on a free loopback port with its own PREFECT_HOME. portfolio_run's runs
use the real Docker sandbox and the local model server the flow starts itself, with SmolLM2:
fast, writes no useful models. These tests check the plumbing; test_pipeline_e2e.py checks
what the pipeline computes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import httpx
import pytest

from optfolio.settings import REPO_ROOT
from servers import prefect_services
from servers.local_model.endpoint import ROLES
from tests.plugins.llm_fixtures import SMOL

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.slow

POOL = "optfolio-process"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def distinct(column: str) -> str:
    """SQL: the sorted distinct values of COLUMN, as one list."""
    return f'list(distinct "{column}" order by "{column}")'


@dataclass(frozen=True)
class DeployedFlow:
    """A flow with `<flow>-nightly` and `<flow>-adhoc` deployments in deployments/prefect.yaml."""

    flow: str
    nightly_cron: str
    adhoc_parameters: dict[str, Any]  # small enough to finish in minutes on a busy machine
    out_parameter: str  # the parameter naming the output directory
    # Parquet glob under the output directory -> {SQL aggregate over those files: its value}
    expect: dict[str, dict[str, Any]]
    nested_in: str | None = None  # the flow's one parameter (a pydantic model) holding the rest
    needs: str | None = None  # a fixture its runs need on this machine (Docker, models)
    run_timeout_s: float = 240.0  # the run itself; a small one takes ~15 s on a quiet machine
    test_timeout_s: float = 300.0  # the test body; the shared fixtures' set-up not counted

    def parameters(self, out: Path) -> dict[str, Any]:
        """The ad-hoc run's parameters as the API takes them, writing under OUT."""
        values = {**self.adhoc_parameters, self.out_parameter: str(out)}
        return {self.nested_in: values} if self.nested_in else values

    def form_fields(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The fields of the UI form that hold `adhoc_parameters` (a nested model's own)."""
        properties: dict[str, Any] = schema["properties"]
        if self.nested_in is None:
            return properties
        node = properties[self.nested_in]  # `Model | None`: anyOf [{$ref}, {type: null}]
        ref = next(option["$ref"] for option in node.get("anyOf", [node]) if "$ref" in option)
        return schema["definitions"][ref.rsplit("/", 1)[-1]]["properties"]


SIMULATE = DeployedFlow(
    flow="simulate",
    nightly_cron="0 2 * * *",
    adhoc_parameters={"Ks": [10], "seeds": 2, "evaluator_errors": [0.0, 0.5], "alpha_step": 0.1},
    out_parameter="out",
    expect={
        "simulation/*.parquet": {
            distinct("K"): [10],
            distinct("seed"): [0, 1],
            distinct("evaluator_error"): [0.0, 0.5],
        }
    },
    nested_in="parameters",
)
PORTFOLIO_RUN = DeployedFlow(
    flow="portfolio_run",
    nightly_cron="0 3 * * *",
    # 1 problem of the shipped sample x 2 candidates; short answers keep it in minutes even
    # when other work slows SmolLM2 from ~125 to a few tokens/s.
    adhoc_parameters={
        "limit": 1,
        "candidates": 2,
        "eval_samples": 1,
        "judge_samples": 1,
        "generator_max_tokens": 64,
        "review_max_tokens": 64,
        # No base_url: the flow starts the local model server and stops it afterwards.
        **{role: {"model": SMOL} for role in ROLES},
    },
    out_parameter="store",
    expect={
        "candidates/run_id=*/*.parquet": {"count(distinct problem_id)": 1, "sum(n_samples)": 2},
        "llm_usage/run_id=*/*.parquet": {distinct("model"): [SMOL]},
        "assembled/dataset_summary/run_id=*/*.parquet": {"max(problems)": 1},
    },
    nested_in="parameters",
    needs="portfolio_run_ready",
    run_timeout_s=270.0,
    test_timeout_s=350.0,  # each portfolio_run test stays under 6 minutes
)
FLOWS = [SIMULATE, PORTFOLIO_RUN]


def _cases() -> list[Any]:
    return [
        pytest.param(
            case, id=case.flow, marks=pytest.mark.timeout(case.test_timeout_s, func_only=True)
        )
        for case in FLOWS
    ]


@pytest.fixture
def ready(request: pytest.FixtureRequest, case: DeployedFlow) -> None:
    """What CASE's runs need, set up before the test body (and its time limit) starts."""
    if case.needs:
        request.getfixturevalue(case.needs)


class _RetryingTransport(httpx.HTTPTransport):
    """Retries 503 and 429 as Prefect's own client does: a loaded server answers 503 when
    its database times out, and rolls the request back, so sending it again is safe."""

    ATTEMPTS = 6

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, self.ATTEMPTS + 1):
            response = super().handle_request(request)
            if response.status_code not in {429, 503} or attempt == self.ATTEMPTS:
                return response
            response.close()
            time.sleep(2.0 * attempt)
        raise AssertionError("unreachable")


def _api(stack: prefect_services.StackStatus) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, timeout=30.0, transport=_RetryingTransport())


def _deployment(api: httpx.Client, flow: str, name: str) -> dict[str, Any]:
    response = api.get(f"/deployments/name/{flow}/{name}")
    assert response.status_code == 200, f"{flow}/{name}: {response.status_code} {response.text}"
    return response.json()


def _wait_for_run(api: httpx.Client, run_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        run = api.get(f"/flow_runs/{run_id}").json()
        if run["state_type"] in TERMINAL:
            return run
        if time.monotonic() > deadline:
            # A run left going would take the CPU from the next test's run.
            api.post(
                f"/flow_runs/{run_id}/set_state",
                json={"state": {"type": "CANCELLING"}, "force": True},
            )
            return run
        time.sleep(1.0)


def _worker_log(stack: prefect_services.StackStatus) -> str:
    log = stack.home / f"worker-{POOL}.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no worker log)"


def _aggregates(out: Path, case: DeployedFlow) -> dict[str, dict[str, Any]]:
    """CASE's `expect` as computed over what the run wrote under OUT."""
    found: dict[str, dict[str, Any]] = {}
    for pattern, aggregates in case.expect.items():
        files = sorted(str(f) for f in out.glob(pattern))
        assert files, f"no Parquet matches {out}/{pattern}"
        [row] = duckdb.sql(
            f"select {', '.join(aggregates)} from read_parquet(?)", params=[files]
        ).fetchall()
        found[pattern] = dict(zip(aggregates, row, strict=True))
    return found


def _typed(field: dict[str, Any]) -> bool:
    return "type" in field or "$ref" in field or any(map(_typed, field.get("anyOf", [])))


@pytest.mark.parametrize("case", FLOWS, ids=lambda case: case.flow)
def test_deployments_are_applied(
    prefect_stack: prefect_services.StackStatus, case: DeployedFlow
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
    assert schedule["schedule"]["cron"] == case.nightly_cron
    assert schedule["schedule"]["timezone"] == "UTC"
    assert adhoc["schedules"] == []
    # The UI form is built from this schema: every small-run parameter must be a typed field.
    fields = case.form_fields(adhoc["parameter_openapi_schema"])
    assert set(case.adhoc_parameters) | {case.out_parameter} <= set(fields)
    assert all(_typed(fields[name]) for name in fields)


@pytest.mark.parametrize("case", _cases())
def test_adhoc_run_from_the_api_completes(
    prefect_stack: prefect_services.StackStatus, case: DeployedFlow, ready: None, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    parameters = case.parameters(out)
    with _api(prefect_stack) as api:
        adhoc = _deployment(api, case.flow, f"{case.flow}-adhoc")
        response = api.post(
            f"/deployments/{adhoc['id']}/create_flow_run", json={"parameters": parameters}
        )
        assert response.status_code == 201, response.text
        run = _wait_for_run(api, response.json()["id"], case.run_timeout_s)
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}\n{_worker_log(prefect_stack)}"
    assert run["parameters"] == parameters
    assert _aggregates(out, case) == case.expect


# --- the UI ---------------------------------------------------------------------------------

# Generous per step (a loaded machine renders slowly); each test's body is bounded as a whole.
UI_TIMEOUT_MS = 45_000


def _field(scope: Page | Locator, label: str) -> Locator:
    """The form field labelled LABEL: its label row, then its `fieldset` of inputs (for a
    nested model, the model's own fields)."""
    return scope.locator(f"div:has(> div > div > label:text-is('{label}'))").first


def _fill(scope: Page | Locator, label: str, value: str, tab: str | None = None) -> None:
    """Type VALUE into field LABEL. A `X | None` field shows type tabs (e.g. int | None) and
    its label points at the tabs, not the input: pick TAB first, then its input."""
    box = _field(scope, label)
    if tab is not None:
        box.get_by_role("tab", name=tab, exact=True).click()
    box.locator("fieldset").first.locator("input, textarea").first.fill(value)


def _delete_list_items(page: Page, label: str, keep: list[str]) -> None:
    """Delete the items of the array field LABEL whose value is not in KEEP, via each
    item's menu (⋮ → Delete), the way a user would."""
    field_box = _field(page, label)
    items = field_box.locator("fieldset input")
    for index in reversed(range(items.count())):
        if items.nth(index).input_value() in keep:
            continue
        field_box.locator("fieldset").get_by_role("button", name="Open menu").nth(index).click()
        page.get_by_role("menuitem", name="Delete").click()
    assert [items.nth(i).input_value() for i in range(items.count())] == keep


def _open_custom_run(page: Page, ui: str, deployment: str, run_name: str) -> None:
    """Deployments → DEPLOYMENT → Run → Custom run, and name the run."""
    page.goto(f"{ui}/deployments", wait_until="domcontentloaded")
    page.get_by_role("link", name=deployment, exact=True).first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    page.get_by_text("Parameters", exact=True).wait_for()
    _name_run(page, run_name)


def _name_run(page: Page, run_name: str) -> None:
    """Type RUN_NAME into the form's Run Name. The form fills that field with a generated
    name once it has loaded; a name typed before then is overwritten (the run is created
    under the generated name: seen in CI), so wait for it, then type and check."""
    from playwright.sync_api import expect

    field = page.get_by_label("Run Name")
    expect(field).not_to_have_value("", timeout=UI_TIMEOUT_MS)
    field.fill(run_name)
    expect(field).to_have_value(run_name)


def _submit_and_wait(
    page: Page, stack: prefect_services.StackStatus, run_name: str, timeout_s: float, shots: Path
) -> dict[str, Any]:
    """Submit the form; wait for the run the form created; show it in the UI."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    _name_run(page, run_name)  # still ours after the other fields were filled
    page.screenshot(path=str(shots / "ui-custom-run-form.png"), full_page=True)
    form_url = page.url
    with _api(stack) as api:
        for attempt in range(2):
            page.get_by_role("button", name="Submit", exact=True).click()
            # On success the form creates the run, toasts and routes back to the deployment.
            try:
                page.wait_for_url(lambda url: url != form_url, timeout=UI_TIMEOUT_MS)
                break
            except PlaywrightTimeout:
                page.screenshot(path=str(shots / f"ui-submit-{attempt}.png"), full_page=True)
                # A click swallowed by a closing menu leaves the form as it was and no run:
                # submit again. A run that exists, or an inline validation error, is final.
                if _runs_named(api, run_name) or page.locator(".p-message--error").count():
                    break
        # The run as the server recorded it: created by the form, not by this test.
        run = _wait_for_run(api, _find_run_by_name(api, run_name, page)["id"], timeout_s)
    # ... and as the UI shows it.
    page.goto(f"{stack.ui_url}/runs/flow-run/{run['id']}", wait_until="domcontentloaded")
    page.get_by_text(run_name, exact=True).first.wait_for()
    page.get_by_text("Completed", exact=True).first.wait_for()
    page.screenshot(path=str(shots / "ui-flow-run-completed.png"))
    return run


@pytest.mark.timeout(SIMULATE.test_timeout_s, func_only=True)
def test_simulate_adhoc_run_from_the_ui(
    prefect_stack: prefect_services.StackStatus, chromium: Browser, tmp_path: Path
) -> None:
    """simulate-adhoc → Custom run, change fields, Submit; the run completes and its Parquet
    holds exactly what the form said."""
    out = tmp_path / "ui-out"
    run_name = f"ui-test-{uuid.uuid4().hex[:8]}"
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        _open_custom_run(page, prefect_stack.ui_url, "simulate-adhoc", run_name)
        # The flow's one parameter is a pydantic model: its fields, labelled by their titles.
        _fill(page, "Out (Optional)", str(out))
        _fill(page, "Seeds (Optional)", "2")
        _fill(page, "Alpha Step (Optional)", "0.1")
        _delete_list_items(page, "Ks (Optional)", keep=["10"])
        _delete_list_items(page, "Evaluator Errors (Optional)", keep=["0", "0.5"])
        run = _submit_and_wait(page, prefect_stack, run_name, SIMULATE.run_timeout_s, tmp_path)
    finally:
        page.screenshot(path=str(tmp_path / "ui-last-page.png"), full_page=True)
        context.close()
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}\n{_worker_log(prefect_stack)}"
    submitted = run["parameters"]["parameters"]
    assert submitted["out"] == str(out)
    assert submitted["seeds"] == 2
    assert submitted["Ks"] == [10]
    assert submitted["evaluator_errors"] == [0, 0.5]
    assert _aggregates(out, SIMULATE) == SIMULATE.expect


def _add_list_item(page: Page, label: str) -> Locator:
    """Switch the `list | None` field LABEL to its list and add one item: the field's box."""
    field_box = _field(page, label)
    field_box.get_by_role("tab", name="list", exact=True).click()
    field_box.get_by_role("button", name="Add item", exact=True).click()
    return field_box


# A problem pasted into the form: the shipped sample's first, under an id of its own.
UI_PROBLEM = {
    "id": "breakfast-sandwiches",
    "description": "A breakfast joint makes two different sandwiches: a regular and a special."
    " Both need eggs and bacon. Each regular sandwich requires 2 eggs and 3 slices of bacon."
    " Each special sandwich requires 3 eggs and 5 slices of bacon. The joint has a total of 40"
    " eggs and 70 slices of bacon. It makes a profit of $3 per regular sandwich and a profit of"
    " $4 per special sandwich. How many of each sandwich should be made to maximize profit?",
    "objective": 60,
}


@pytest.mark.timeout(PORTFOLIO_RUN.test_timeout_s, func_only=True)
def test_portfolio_run_adhoc_run_from_the_ui(
    prefect_stack: prefect_services.StackStatus,
    chromium: Browser,
    portfolio_run_ready: None,
    tmp_path: Path,
) -> None:
    """portfolio_run-adhoc → Custom run: the flow's one parameter is a pydantic model, so the
    form nests its fields (and each role's endpoint one level deeper); one problem is typed
    into "Problems (inline)" instead of a dataset; Submit; the run completes in the worker,
    with the local model server and Docker, and its Parquet holds that problem."""
    store = tmp_path / "ui-store"
    run_name = f"ui-test-{uuid.uuid4().hex[:8]}"
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        _open_custom_run(page, prefect_stack.ui_url, "portfolio_run-adhoc", run_name)
        # Labels are the pydantic titles; every field of the nested model is "(Optional)".
        _fill(page, "Store (Optional)", str(store))
        problem_box = _add_list_item(page, "Problems (inline) (Optional)")
        _fill(problem_box, "Id", UI_PROBLEM["id"])
        _fill(problem_box, "Description", UI_PROBLEM["description"])
        _fill(problem_box, "Objective (Optional)", str(UI_PROBLEM["objective"]), tab="float")
        _fill(page, "Candidates (Optional)", "2")
        _fill(page, "Eval Samples (Optional)", "1")
        _fill(page, "Judge Samples (Optional)", "1", tab="int")  # empty: the evaluator's m
        _fill(page, "Generator Max Tokens (Optional)", "64")
        _fill(page, "Review Max Tokens (Optional)", "64")
        for role in ROLES:  # three "Model" fields: each is reached through its role's box
            _fill(_field(page, f"{role.title()} (Optional)"), "Model (Optional)", SMOL)
        run = _submit_and_wait(page, prefect_stack, run_name, PORTFOLIO_RUN.run_timeout_s, tmp_path)
        page.get_by_role("tab", name="Parameters", exact=True).click()
        page.get_by_text(str(store)).first.wait_for()  # the run's own (nested) parameters
        page.screenshot(path=str(tmp_path / "ui-flow-run-parameters.png"), full_page=True)
    finally:
        page.screenshot(path=str(tmp_path / "ui-last-page.png"), full_page=True)
        context.close()
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}\n{_worker_log(prefect_stack)}"
    submitted = run["parameters"]["parameters"]
    typed = {k: v for k, v in PORTFOLIO_RUN.adhoc_parameters.items() if k not in ROLES}
    del typed["limit"]  # the API test's selection from the sample; here the one problem typed
    assert {name: submitted[name] for name in typed} == typed
    # The form sends every field of a nested model; base_url stays empty (null).
    assert [(submitted[role]["model"], submitted[role]["base_url"]) for role in ROLES] == [
        (SMOL, None)
    ] * len(ROLES)
    assert (submitted["store"], submitted["path"]) == (str(store), None)
    assert submitted["problems"] == [UI_PROBLEM]
    assert _aggregates(store, PORTFOLIO_RUN) == PORTFOLIO_RUN.expect
    problems = duckdb.sql(
        "select problem_id, dataset, description, objective_truth, source from read_parquet(?)",
        params=[str(store / "problems" / "run_id=*" / "*.parquet")],
    ).fetchall()
    assert problems == [(UI_PROBLEM["id"], "inline", UI_PROBLEM["description"], 60.0, "inline#0")]
    [(candidate_problems,)] = duckdb.sql(
        f"select {distinct('problem_id')} from read_parquet(?)",
        params=[str(store / "candidates" / "run_id=*" / "*.parquet")],
    ).fetchall()
    assert candidate_problems == [UI_PROBLEM["id"]]


def _runs_named(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    return api.post(
        "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}, "limit": 2}
    ).json()


def _find_run_by_name(api: httpx.Client, name: str, page: Page) -> dict[str, Any]:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        runs = _runs_named(api, name)
        if runs:
            assert len(runs) == 1, f"the form created {len(runs)} runs named {name!r}"
            return runs[0]
        time.sleep(0.5)
    # Say what the page showed instead (a validation message or an error toast).
    shown = page.locator("body").inner_text()[-1500:]
    raise AssertionError(f"the UI created no flow run named {name!r}; page at {page.url}:\n{shown}")
