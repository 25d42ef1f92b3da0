"""Nightly runs against a real Prefect server and worker: one night at a time, a failed night
retried (by Prefect, then by the UI's Retry) under one run id, and a failure notification
received by a real HTTP listener.

The stack comes from `prefect_stack` (tests/plugins/server_fixtures.py), the same code as
`optfolio server up`; the notification is configured by the function `up` calls. A nightly
run pointed at a dataset that does not exist fails before any paid call (no model, no Docker).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from optfolio.run_config import PortfolioRunParameters
from optfolio.settings import REPO_ROOT
from servers import prefect_services

pytestmark = pytest.mark.slow

NIGHTLY = [("simulate", "simulate-nightly"), ("portfolio_run", "portfolio_run-nightly")]
ADHOC = [("simulate", "simulate-adhoc"), ("portfolio_run", "portfolio_run-adhoc")]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT_S = 240.0  # the worker's poll, a flow-run process start, two quick failures
NOTIFY_TIMEOUT_S = 120.0  # the event, the trigger, the action's POST


class _Retrying(httpx.HTTPTransport):
    """A loaded server answers 503 on a database timeout and rolls back: ask again."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, 7):
            response = super().handle_request(request)
            if response.status_code not in {429, 503} or attempt == 6:
                return response
            response.close()
            time.sleep(2.0 * attempt)
        raise AssertionError("unreachable")


def _client(stack: prefect_services.StackStatus) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, timeout=30.0, transport=_Retrying())


class Listener:
    """A webhook receiver on a free loopback port: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        received: queue.Queue[dict[str, Any]] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.put(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep pytest's output clean
                pass

        self.received = received
        self.server = ThreadingHTTPServer((prefect_services.HOST, 0), Handler)
        self.url = f"http://{prefect_services.HOST}:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout_s: float) -> dict[str, Any]:
        try:
            return self.received.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no notification within {timeout_s:.0f} s") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    receiver = Listener()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def notification_state(prefect_stack: prefect_services.StackStatus) -> Iterator[None]:
    """Leave the session's stack as `up` without a URL left it: no block, automation or
    Variable of ours (other tests' failing runs must not POST to a closed listener)."""
    yield
    with _client(prefect_stack) as api:
        found = api.post(
            "/automations/filter",
            json={"automations": {"name": {"any_": [prefect_services.FAILURE_AUTOMATION]}}},
        ).json()
        for automation in found:
            api.delete(f"/automations/{automation['id']}")
        block = _block(api)
        if block is not None:
            api.delete(f"/block_documents/{block['id']}")
        api.delete(f"/variables/name/{prefect_services.NOTIFY_URL_VARIABLE}")


def _block(api: httpx.Client) -> dict[str, Any] | None:
    response = api.get(
        f"/block_types/slug/{prefect_services.NOTIFICATION_BLOCK_TYPE}"
        f"/block_documents/name/{prefect_services.NOTIFICATION_BLOCK}"
    )
    return response.json() if response.status_code == 200 else None


def _automations(api: httpx.Client) -> list[dict[str, Any]]:
    return api.post(
        "/automations/filter",
        json={"automations": {"name": {"any_": [prefect_services.FAILURE_AUTOMATION]}}},
    ).json()


def _deployment(api: httpx.Client, flow: str, name: str) -> dict[str, Any]:
    response = api.get(f"/deployments/name/{flow}/{name}")
    assert response.status_code == 200, f"{flow}/{name}: {response.text}"
    return response.json()


def _wait_for_state(
    api: httpx.Client, flow_run_id: str, run_count: int, timeout_s: float
) -> dict[str, Any]:
    """The flow run once it is terminal after RUN_COUNT attempts (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = api.get(f"/flow_runs/{flow_run_id}").json()
        if run["state_type"] in TERMINAL and run["run_count"] >= run_count:
            return run
        if time.monotonic() > deadline:
            api.post(
                f"/flow_runs/{flow_run_id}/set_state",
                json={"state": {"type": "CANCELLING"}, "force": True},
            )
            return run
        time.sleep(1.0)


def _worker_log(stack: prefect_services.StackStatus) -> str:
    logs = sorted(stack.home.glob("worker-*.log"))
    return logs[0].read_text(errors="replace")[-3000:] if logs else "(no worker log)"


def _expected_run_id(flow_run: dict[str, Any]) -> str:
    """What portfolio_run names the run of FLOW_RUN: its expected start and its id's end."""
    started = datetime.fromisoformat(flow_run["expected_start_time"]).astimezone(UTC)
    return f"run-{started:%Y%m%dT%H%M%SZ}-{uuid.UUID(flow_run['id']).hex[-8:]}"


def _run_dirs(store: Path) -> list[str]:
    return sorted(p.name.removeprefix("run_id=") for p in (store / "runs").glob("run_id=*"))


def test_nightly_deployments_run_one_at_a_time(
    prefect_stack: prefect_services.StackStatus,
) -> None:
    """A night still running when the next is due: the new one is cancelled, not queued."""
    with _client(prefect_stack) as api:
        for flow, name in NIGHTLY:
            deployment = _deployment(api, flow, name)
            assert deployment["global_concurrency_limit"]["limit"] == 1, name
            assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
            assert prefect_services.NIGHTLY_TAG in deployment["tags"], name
        for flow, name in ADHOC:
            deployment = _deployment(api, flow, name)
            assert deployment["global_concurrency_limit"] is None, name
            assert prefect_services.NIGHTLY_TAG not in deployment["tags"], name


def test_nightly_portfolio_run_names_its_dataset_and_fits_a_night() -> None:
    """The dataset is a parameter of the deployment (here the shipped sample), and N and m
    keep a night of the sample on the embedded model to hours (README: ~2 h)."""
    config = yaml.safe_load((REPO_ROOT / "deployments" / "prefect.yaml").read_text())
    [nightly] = [d for d in config["deployments"] if d["name"] == "portfolio_run-nightly"]
    p = PortfolioRunParameters(**nightly["parameters"]["parameters"])
    assert p.path is not None and (REPO_ROOT / p.path).is_file()
    problems = len((REPO_ROOT / p.path).read_text().splitlines())
    # The rates measured here: ~25 s per candidate, ~4 s per evaluator or judge sample.
    hours = problems * p.candidates * (25 + 4 * (p.eval_samples + p.judge_samples)) / 3600
    assert 0.5 < hours < 6, hours


@pytest.mark.timeout(120, func_only=True)
def test_notification_setup_is_idempotent_and_follows_the_url(
    prefect_stack: prefect_services.StackStatus, notification_state: None
) -> None:
    port = prefect_stack.port
    assert port is not None
    quiet = lambda _line: None  # noqa: E731
    first = prefect_services.configure_failure_notification(port, "http://127.0.0.1:9/a", quiet)
    again = prefect_services.configure_failure_notification(port, "http://127.0.0.1:9/a", quiet)
    moved = prefect_services.configure_failure_notification(port, "http://127.0.0.1:9/b", quiet)
    with _client(prefect_stack) as api:
        assert first == again == moved  # one automation, updated in place
        assert [a["id"] for a in _automations(api)] == [first]
        block = _block(api)
        assert block is not None and block["data"]["url"] == "http://127.0.0.1:9/b"
        # No --notify-url: the Prefect Variable decides.
        response = api.post(
            "/variables/",
            json={"name": prefect_services.NOTIFY_URL_VARIABLE, "value": "http://127.0.0.1:9/c"},
        )
        assert response.status_code == 201, response.text
        assert prefect_services.configure_failure_notification(port, None, quiet) == first
        block = _block(api)
        assert block is not None and block["data"]["url"] == "http://127.0.0.1:9/c"
        [automation] = _automations(api)
    [action] = automation["actions"]
    assert action["type"] == "send-notification" and action["block_document_id"] == block["id"]
    assert automation["trigger"]["posture"] == "Reactive"
    assert automation["trigger"]["threshold"] == 1


@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 2 * NOTIFY_TIMEOUT_S, func_only=True)
def test_a_failed_night_is_retried_under_one_run_id_and_notified(
    prefect_stack: prefect_services.StackStatus,
    listener: Listener,
    notification_state: None,
    tmp_path: Path,
) -> None:
    port = prefect_stack.port
    assert port is not None
    prefect_services.configure_failure_notification(port, listener.url, lambda _line: None)
    store = tmp_path / "store"
    missing = tmp_path / "no-such-dataset.jsonl"
    parameters = {"parameters": {"path": str(missing), "store": str(store)}}
    with _client(prefect_stack) as api:
        nightly = _deployment(api, "portfolio_run", "portfolio_run-nightly")
        response = api.post(
            f"/deployments/{nightly['id']}/create_flow_run",
            # The flow's own retry count (1) applies; only its pause is cut for the test.
            json={"parameters": parameters, "empirical_policy": {"retry_delay": 0}},
        )
        assert response.status_code == 201, response.text
        flow_run_id = response.json()["id"]

        run = _wait_for_state(api, flow_run_id, 2, RUN_TIMEOUT_S)
        assert (run["state_type"], run["run_count"]) == ("FAILED", 2), (
            f"{run['state_type']} after {run['run_count']} attempts\n{_worker_log(prefect_stack)}"
        )
        assert f"{missing}: no such file" in run["state"]["message"], run["state"]
        # Both attempts worked in one run: the id Prefect's retry kept.
        expected = _expected_run_id(run)
        assert _run_dirs(store) == [expected]

        notification = listener.next(NOTIFY_TIMEOUT_S)
        assert run["name"] in notification["subject"] and "Failed" in notification["subject"]
        assert f"flow-run/{flow_run_id}" in notification["body"], notification
        assert "portfolio_run-nightly" in notification["body"], notification
        assert f"{missing}: no such file" in notification["body"], notification
        assert notification["text"].startswith(notification["subject"])

        # The UI's Retry button: the same flow run again, resuming the same run id.
        response = api.post(
            f"/flow_runs/{flow_run_id}/set_state",
            json={
                "state": {
                    "type": "SCHEDULED",
                    "name": "AwaitingRetry",
                    "message": "Retry from the UI",
                },
                "force": True,
            },
        )
        assert response.status_code == 201, response.text
        run = _wait_for_state(api, flow_run_id, 3, RUN_TIMEOUT_S)
        assert (run["state_type"], run["run_count"]) == ("FAILED", 3), _worker_log(prefect_stack)
        assert _run_dirs(store) == [expected]
        assert run["name"] in listener.next(NOTIFY_TIMEOUT_S)["subject"]
