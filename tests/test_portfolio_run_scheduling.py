"""The flow's bounded concurrency: more problems than slots all finish, never more in flight.

Real Prefect and the real sandbox; the endpoint is the suite's fault-injecting server, whose
answers hold no code (every candidate is ⊥), so nothing is reviewed or run in a container.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from optfolio.errors import ServiceUnavailable
from optfolio.run_config import parse_parameters
from optfolio.store import RunStore
from tests.plugins.llm_fixtures import Fault, FaultServer


def test_more_problems_than_concurrency_all_finish(
    prefect_harness: None, sandbox_image: str, fault_server: FaultServer, tmp_path: Path
) -> None:
    from flows.portfolio_run import portfolio_run

    fault_server.default = Fault(delay_s=0.05)
    endpoint = {"model": "m", "base_url": fault_server.base_url}
    parameters = parse_parameters(
        limit=3,
        candidates=2,
        eval_samples=1,
        judge_samples=1,
        generator=endpoint,
        evaluator=endpoint,
        judge=endpoint,
        concurrency=1,
        alphas=[0.5],
        sizes=[2],
        random_draws=2,
        store=str(tmp_path),
        run_id="scheduling",
    )
    outcome = portfolio_run(parameters)
    assert outcome["problems"] == 3
    candidates = RunStore(tmp_path).read("candidates", ["scheduling"]).to_pylist()
    assert len({c["problem_id"] for c in candidates}) == 3
    assert len(fault_server.requests) == 3  # one request of n=2 per problem
    assert fault_server.max_in_flight == 1  # one problem at a time


def test_without_an_engine_the_flow_fails_at_once_naming_the_set_up_command(
    prefect_harness: None,
    fault_server: FaultServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flow never provisions Docker (no apt-get, no dockerd): with no engine answering it
    fails before any paid call, and says which command sets the engine up."""
    import subprocess

    from flows.portfolio_run import portfolio_run

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    started: list[object] = []
    real_popen = subprocess.Popen

    def recording_popen(args, *rest, **kwargs):  # type: ignore[no-untyped-def]
        started.append(args)
        return real_popen(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    endpoint = {"model": "m", "base_url": fault_server.base_url}
    parameters = parse_parameters(
        limit=1,
        candidates=2,
        generator=endpoint,
        evaluator=endpoint,
        judge=endpoint,
        store=str(tmp_path / "store"),
        run_id="no-engine",
    )
    with pytest.raises(ServiceUnavailable, match="optfolio sandbox engine start"):
        portfolio_run.with_options(retries=0)(parameters)  # the flow's own retry: not here
    assert fault_server.requests == []  # nothing was paid for
    launched = [str(a) for a in started]
    assert not [a for a in launched if "apt-get" in a or "dockerd" in a], launched
