"""Scale-out and load (issue 7, parts 4-5), against the real parts: a real local Dask cluster
(2 worker processes), a second real dockerd reached over TCP, the real sandbox and Prefect.
LLM calls go to ``bench/_fake_endpoint.py`` (deterministic, zero latency): never a model.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import _fake_endpoint as fake_endpoint_process
from optfolio.run_config import PortfolioRunParameters, parse_parameters
from optfolio.store import RunStore, StoreError

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "scale"


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_endpoint() -> Iterator[str]:
    """Base URL of the deterministic fake OpenAI-compatible endpoint (its own process)."""
    with fake_endpoint_process.running(latency=0) as url:
        yield f"{url}/v1"


def endpoint_requests(base_url: str) -> int:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as reply:
        return int(json.load(reply)["requests"])


def run_parameters(base_url: str, store: str, **changes: object) -> PortfolioRunParameters:
    endpoint = {"model": "fake", "base_url": base_url}
    return parse_parameters(
        limit=2,
        candidates=3,
        eval_samples=2,
        judge_samples=1,
        generator=endpoint,
        evaluator=endpoint,
        judge=endpoint,
        alphas=[0.2, 0.5, 0.8],
        sizes=[2],
        random_draws=3,
        sandbox={"timeout_s": 30},
        store=store,
        run_id=RUN_ID,
        **changes,
    )


SORT_KEYS = {
    "candidates": ["problem_id", "candidate_id"],
    "executions": ["problem_id", "candidate_id"],
    "scores": ["problem_id", "candidate_id", "sample_index"],
    "judgments": ["problem_id", "candidate_id", "sample_index"],
}
VOLATILE = {"executions": ["runtime_s"]}  # wall time of a container differs run to run


def stage_table(store: RunStore, table: str) -> pa.Table:
    data = store.read(table, [RUN_ID]).drop_columns(VOLATILE.get(table, []))
    return data.sort_by([(key, "ascending") for key in SORT_KEYS[table]])


def assembled(store: RunStore, view: str) -> pa.Table:
    data = pq.read_table(store.root / "assembled" / view / f"run_id={RUN_ID}" / "part-0.parquet")
    return data.sort_by([(name, "ascending") for name in data.column_names])


# ---- Dask task runner, store URI -----------------------------------------------------------


def test_dask_run_on_a_local_cluster_equals_a_thread_run(
    prefect_harness: None, sandbox_image: str, fake_endpoint: str, tmp_path: Path
) -> None:
    """The same run on two Dask worker processes (store given as a file:// URI, dispatched
    as a deployment run would be) and on threads (a plain path) writes the same tables."""
    from distributed import Client, LocalCluster, get_task_stream

    from flows.portfolio_run import portfolio_run

    threaded = run_parameters(fake_endpoint, str(tmp_path / "thread"))
    assert portfolio_run(threaded)["problems"] == 2
    requests_by_thread_run = endpoint_requests(fake_endpoint)

    dask_root = tmp_path / "dask store"  # a space: the URI spells it %20
    uri = "file://" + str(dask_root).replace(" ", "%20")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        worker_pids = set(client.run(os.getpid).values())
        workers = set(client.scheduler_info()["workers"])
        parameters = run_parameters(
            fake_endpoint, uri, task_runner="dask", dask_address=cluster.scheduler_address
        )
        with get_task_stream(client) as stream:
            outcome = portfolio_run(parameters)  # not on Dask yet: runs itself as a subflow
    assert outcome["store"] == str(dask_root)
    assert os.getpid() not in worker_pids and len(worker_pids) == 2
    ran = [record["key"] for record in stream.data]
    # load_dataset and the assembly run in the flow's process; every stage task on Dask.
    for stage in ("generate", "execute", "evaluate", "judge"):
        assert sum(stage in str(key) for key in ran) == 2, (stage, ran)
    assert {record["worker"] for record in stream.data} <= workers
    # Both runs asked the (deterministic) endpoint the same number of times.
    assert endpoint_requests(fake_endpoint) == 2 * requests_by_thread_run

    thread_store, dask_store = RunStore(tmp_path / "thread"), RunStore(uri)
    assert dask_store.root == dask_root
    for table in SORT_KEYS:
        expected = stage_table(thread_store, table)
        assert expected.num_rows > 0
        assert stage_table(dask_store, table).equals(expected), table
    for view in ("rankings", "portfolio_sizes", "quality", "dataset_summary"):
        assert assembled(dask_store, view).equals(assembled(thread_store, view)), view
    executions = stage_table(dask_store, "executions").to_pylist()
    assert {e["status"] for e in executions} == {"ok"}  # the fake's PuLP models ran in Docker


def test_store_uris() -> None:
    assert RunStore("file:///srv/optfolio%20store").root == Path("/srv/optfolio store")
    with pytest.raises(StoreError, match="object stores are not"):
        RunStore("s3://bucket/store")
    with pytest.raises(StoreError, match="not a valid URI"):
        RunStore("file://elsewhere/store")


# ---- a remote Docker engine ----------------------------------------------------------------


@contextlib.contextmanager
def tcp_to_unix(socket_path: str) -> Iterator[str]:
    """``tcp://127.0.0.1:<port>`` forwarding to a unix socket, half-closes included, so the
    engine looks remote: nothing of this machine's files can be bind-mounted through it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                incoming, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            outgoing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            outgoing.connect(socket_path)
            for a, b in ((incoming, outgoing), (outgoing, incoming)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


CHECKS = """
import os, socket
for path in ("/etc/evil", "/code/main.py", "/opt/venv/evil.py"):
    try:
        open(path, "w").write("x")
        print(path, "written")
    except OSError as e:
        print(path, type(e).__name__)
try:
    socket.create_connection(("127.0.0.1", 2375), timeout=2)
    print("network reached")
except OSError as e:
    print("network", type(e).__name__)
print("uid", os.getuid())
print("STATUS: Optimal")
print("OBJECTIVE: 42.5")
"""


def test_remote_engine_over_tcp_gets_the_code_copied_in(
    second_docker_engine: str,
    sandbox_image: str,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandbox import Sandbox, engine
    from sandbox.container import delivery_for, is_local_engine, run_in, start_container
    from sandbox.limits import DEFAULT_LIMITS

    with tcp_to_unix(second_docker_engine.removeprefix("unix://")) as tcp_host:
        monkeypatch.setenv("DOCKER_HOST", tcp_host)
        client = engine.client()  # what every optfolio command uses: from DOCKER_HOST
        try:
            assert not is_local_engine(client) and delivery_for(client) == "copy"
            monkeypatch.setenv("OPTFOLIO_SANDBOX_DELIVERY", "bind")
            with pytest.raises(ValueError, match="local unix socket"):
                delivery_for(client)
            monkeypatch.delenv("OPTFOLIO_SANDBOX_DELIVERY")

            slot = start_container(client, sandbox_image, DEFAULT_LIMITS)
            attrs = client.api.inspect_container(slot.container.id)
            with pytest.raises(docker.errors.NotFound):  # it lives on the second engine
                docker_client.containers.get(slot.container.id)
            result = run_in(slot, CHECKS, DEFAULT_LIMITS)
            assert attrs["Mounts"] == [] and not attrs["HostConfig"].get("Binds")
            host = attrs["HostConfig"]
            assert host["ReadonlyRootfs"] and host["NetworkMode"] == "none"
            assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
            assert attrs["Config"]["User"] == "10001:10001"
            assert result.status == "ok", result.stderr
            assert result.objective == 42.5
            assert "written" not in result.stdout and "network reached" not in result.stdout
            assert "uid 10001" in result.stdout

            big = "# " + "x" * 300_000 + "\nprint('OBJECTIVE: 7')\n"  # above argv's 128 KiB
            with Sandbox(client=client, image=sandbox_image, warm=1) as box:
                results = box.run_many([big, "raise SystemExit(3)"], parallelism=2)
            assert [r.status for r in results] == ["ok", "error"]
            assert results[0].objective == 7.0 and results[1].exit_code == 3
            leftovers = client.containers.list(all=True, filters={"label": "optfolio.sandbox"})
            assert leftovers == []
        finally:
            client.close()


# ---- load ----------------------------------------------------------------------------------

LOAD_PROBLEMS = 10_000


def test_sql_assembly_over_ten_thousand_problems(tmp_path: Path) -> None:
    """10k problems x 20 candidates, m = 4, judged: the assembly finishes and its aggregates
    are right (timing and memory: ``bench/load.py assembly``)."""
    from bench.load import write_synthetic_run
    from optfolio import warehouse

    store = RunStore(tmp_path)
    write_synthetic_run(store, LOAD_PROBLEMS, per_problem=20, samples=4, run_id=RUN_ID)
    settings = warehouse.AssemblySettings(alphas=(0.1, 0.5), sizes=(2,), random_draws=5)
    with warehouse.connect(store, [RUN_ID], settings) as con:
        sizes = con.execute(
            "select evaluator, alpha, count(*), min(portfolio_size), max(portfolio_size),"
            " bool_and(target_reached) from portfolio_sizes group by all order by all"
        ).fetchall()
        mass = con.execute(
            "select min(total), max(total) from (select sum(p) total from candidates"
            " group by problem_id)"
        ).fetchone()
        summary = con.execute(
            "select evaluator, basis, problems, mean_pass_at_1 from dataset_summary"
            " where basis = 'alpha' and alpha = 0.5 and unit = 'candidate' order by evaluator"
        ).fetchall()
    assert [row[:3] for row in sizes] == [
        (evaluator, alpha, LOAD_PROBLEMS)
        for evaluator in ("generator", "llm")
        for alpha in (0.1, 0.5)
    ]
    # 18 valid candidates of 20 per problem; mass 0.9 of 1 − α needs more than one of them
    assert all(1 <= row[3] <= row[4] <= 18 for row in sizes)
    assert mass is not None and abs(mass[0] - 1) < 1e-9 and abs(mass[1] - 1) < 1e-9
    assert [row[2] for row in summary] == [LOAD_PROBLEMS, LOAD_PROBLEMS]
    # candidates 0, 3, 6, ... of the flat list hit the truth: per problem 7 of 20 samples
    # (indices ≡ 0 mod 3 within its block, shifted per problem), ⊥ (every 10th) included
    expected_pass_at_1 = _expected_pass_at_1(LOAD_PROBLEMS, 20)
    assert all(abs(row[3] - expected_pass_at_1) < 1e-9 for row in summary), summary


def _expected_pass_at_1(problems: int, per_problem: int) -> float:
    shares = []
    for problem in range(problems):
        flat = range(problem * per_problem, (problem + 1) * per_problem)
        correct = sum(1 for i in flat if i % 10 != 9 and i % 3 == 0)
        shares.append(correct / per_problem)
    return sum(shares) / problems


def test_two_concurrent_runs_share_one_store(
    sandbox_image: str, fake_endpoint: str, tmp_path: Path
) -> None:
    """Two `optfolio run` processes at once, different run ids, one store: both finish and
    each run's tables hold exactly its own problems' work (peak RSS: bench/load.py)."""
    from bench.load import start_concurrent_runs

    outcomes = start_concurrent_runs(tmp_path, fake_endpoint, limit=2, candidates=3)
    for run_id, outcome in outcomes.items():
        assert outcome["returncode"] == 0, (run_id, str(outcome["output"])[-2000:])
    store = RunStore(tmp_path / "store")
    assert store.runs("candidates") == ["a", "b"]
    tables = {run: {t: store.read(t, [run]) for t in SORT_KEYS} for run in ("a", "b")}
    for run in ("a", "b"):
        assert tables[run]["executions"].num_rows == tables[run]["candidates"].num_rows > 0
        assert set(tables[run]["executions"].column("status").to_pylist()) == {"ok"}
        summary = pq.read_table(
            store.root / "assembled" / "dataset_summary" / f"run_id={run}" / "part-0.parquet"
        )
        assert summary.num_rows > 0
    # Same parameters, same deterministic endpoint: the two runs found the same candidates.
    ids = [sorted(tables[r]["candidates"].column("candidate_id").to_pylist()) for r in "ab"]
    assert ids[0] == ids[1]
