"""Issue 13, parts 3 and 4: LLM settings kept in Prefect, and one endpoint's load bounded
across runs.

Real parts: the session's Prefect stack (`optfolio server up`'s code; its server holds the
Variables, Secret blocks and the global concurrency limit), `optfolio run` processes, Docker
for the sandbox. The endpoint is ``bench/_fake_endpoint.py`` because the test needs what no
real server reports: its peak of requests in flight at once (``max_in_flight``); its latency
makes requests overlap.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import _fake_endpoint as fake_endpoint
from optfolio.errors import InputError
from optfolio.run_config import ModelEndpoint, parse_parameters
from servers import prefect_services
from servers.local_model.endpoint import role_endpoints
from tasks._prefect_settings import (
    BASE_URL_VARIABLE,
    MODEL_VARIABLE,
    endpoint_limit_name,
    prepare_endpoints,
    secret_api_key,
    with_prefect_variables,
)
from tests.plugins.prefect_fixtures import off_event_loop

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("optfolio")
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
# Two problems of the shipped sample, 4 candidates, one evaluator and one judge sample each:
# the reviews of one problem alone send 4 requests at once per role when nothing limits them.
RUN_ARGS = [
    *("--limit", "2", "--candidates", "4", "--eval-samples", "1", "--judge-samples", "1"),
    *("--concurrency", "2", "--model", "fake"),
]


@contextlib.contextmanager
def on_server(stack: prefect_services.StackStatus) -> Iterator[None]:
    """This process's Prefect client talks to the stack's server."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            yield
    finally:
        # Prefect keeps one events worker per process, bound to the API URL it first saw
        # (blocks loaded here emit events): stopped, so later tests' events reach their own
        # server rather than this stack's.
        off_event_loop(lambda: EventsWorker.drain_all(timeout=30))


@contextlib.contextmanager
def variables(**values: str) -> Iterator[None]:
    """Prefect Variables set for the block, then removed (the stack serves other tests)."""
    from prefect.variables import Variable

    for name, value in values.items():
        off_event_loop(lambda n=name, v=value: Variable.set(n, v, overwrite=True))
    try:
        yield
    finally:
        for name in values:
            off_event_loop(lambda n=name: Variable.unset(n))


# ---- settings read from Prefect ---------------------------------------------------------------


def test_endpoint_and_model_precedence_parameter_variable_environment_default(
    prefect_stack: prefect_services.StackStatus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://environment.invalid/v1")
    with on_server(prefect_stack):
        plain = with_prefect_variables(parse_parameters())
        with role_endpoints(plain) as resolved:  # no Variables: the environment, the default
            assert resolved["judge"].base_url == "http://environment.invalid/v1"
            assert resolved["judge"].model == DEFAULT_MODEL
        with variables(
            **{BASE_URL_VARIABLE: "http://variable.invalid/v1", MODEL_VARIABLE: "var-model"}
        ):
            p = with_prefect_variables(
                parse_parameters(
                    # the model set to the default's value is given: it stays
                    generator={"model": DEFAULT_MODEL},
                    # as the CLI passes an absent --base-url: None is not given
                    evaluator={"base_url": None, "model": "own-model"},
                    judge={"base_url": "http://explicit.invalid/v1"},
                )
            )
            assert with_prefect_variables(p) == p  # applying again changes nothing
        with role_endpoints(p) as resolved:
            endpoints = {r: (e.base_url, e.model) for r, e in resolved.items()}
    assert endpoints == {
        "generator": ("http://variable.invalid/v1", DEFAULT_MODEL),
        "evaluator": ("http://variable.invalid/v1", "own-model"),
        "judge": ("http://explicit.invalid/v1", "var-model"),
    }


def test_api_key_secret_block_is_read_and_a_missing_one_names_block_and_role(
    prefect_stack: prefect_services.StackStatus,
) -> None:
    from prefect.blocks.system import Secret as SecretBlock

    with on_server(prefect_stack):
        off_event_loop(
            lambda: SecretBlock(value="sk-from-block").save("optfolio-test-key", overwrite=True)
        )
        key = secret_api_key(ModelEndpoint(api_key_secret="optfolio-test-key"), "judge")
        assert key is not None and key.reveal() == "sk-from-block"
        assert "sk-from-block" not in repr(key)
        assert secret_api_key(ModelEndpoint(), "judge") is None  # the environment's, later
        missing = {
            "generator": ModelEndpoint(base_url="http://x.invalid/v1"),
            "judge": ModelEndpoint(base_url="http://x.invalid/v1", api_key_secret="no-such"),
        }
        with pytest.raises(InputError, match=r"judge: no Prefect Secret block named 'no-such'"):
            prepare_endpoints(missing, endpoint_limit=2)


# ---- one endpoint's load across runs ----------------------------------------------------------


def start_run(
    stack: prefect_services.StackStatus, store: Path, log_dir: Path, *extra: str
) -> subprocess.Popen[str]:
    """``optfolio run`` on the stack's server; its endpoint comes from the Prefect Variable
    (no --base-url; the environment's points nowhere, so a Variable not applied fails)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PREFECT_"))}
    env |= {
        "PREFECT_API_URL": stack.api_url,
        "PREFECT_HOME": str(log_dir / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_API_KEY": "sk-test",
    }
    log_dir.mkdir(parents=True)
    with (log_dir / "stdout").open("w") as out, (log_dir / "stderr").open("w") as err:
        return subprocess.Popen(
            [str(CLI), "run", *RUN_ARGS, "--store", str(store), *extra],
            stdout=out,
            stderr=err,
            text=True,
            env=env,
            cwd=ROOT,
        )


def endpoint_stats(root_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{root_url}/stats", timeout=10) as response:
        return json.load(response)


@pytest.mark.parametrize(("endpoint_limit", "bounded"), [(2, True), (0, False)])
def test_two_runs_at_once_share_one_endpoint_limit(
    prefect_stack: prefect_services.StackStatus,
    sandbox_image: str,
    tmp_path: Path,
    endpoint_limit: int,
    bounded: bool,
) -> None:
    """Two `optfolio run` processes, each with its own store (no shared response cache),
    at once: with a limit of 2 the endpoint never serves more than 2 requests at a time;
    with the limit off (0) it serves more."""
    with (
        fake_endpoint.running(latency=0.5, slots=64) as root_url,
        on_server(prefect_stack),
        variables(**{BASE_URL_VARIABLE: f"{root_url}/v1"}),
    ):
        runs = [
            start_run(
                prefect_stack,
                tmp_path / f"store-{name}",
                tmp_path / name,
                "--endpoint-limit",
                str(endpoint_limit),
            )
            for name in ("a", "b")
        ]
        for name, run in zip(("a", "b"), runs, strict=True):
            code = run.wait(timeout=500)
            assert code == 0, (tmp_path / name / "stderr").read_text()[-3000:]
        stats = endpoint_stats(root_url)
        limit = httpx.get(
            f"{prefect_stack.api_url}/v2/concurrency_limits/"
            f"{endpoint_limit_name(f'{root_url}/v1')}",
            timeout=30,
        )
    peak = stats["max_in_flight"]
    print(f"\nendpoint_limit={endpoint_limit}: {stats['requests']} requests, peak in flight {peak}")
    # Every request of both runs: 2 problems x (1 generation + 4 evaluations + 4 judgments).
    assert stats["requests"] == 2 * 2 * (1 + 4 + 4)
    if bounded:
        assert limit.status_code == 200 and limit.json()["limit"] == endpoint_limit
        assert limit.json()["active_slots"] == 0  # every slot given back
        assert 1 <= peak <= endpoint_limit
    else:
        assert limit.status_code == 404  # off: no limit made, no slot taken
        assert peak > 2
