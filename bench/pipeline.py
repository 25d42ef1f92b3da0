"""Benchmark: the portfolio pipeline's LLM stages against an endpoint with a fixed latency.

What runs: the real Prefect flow ``portfolio_run`` (embedded Prefect, the real tasks
``generate`` / ``evaluate`` / ``judge`` with their LLMClient, response cache, Parquet parts and
usage rows, then the DuckDB assembly) on problems × N candidates (default 100 × 50, m = 4
evaluator samples, 1 judge sample), against ``bench/_fake_endpoint.py``: an OpenAI-compatible
server on 127.0.0.1 that takes L seconds per request, serves at most C requests at once (more
wait in its queue), honours ``n``, and reports usage from text lengths (1 token per 4
characters; see that module). Generated candidates are distinct per sample.

What does not run: Docker. 5000 containers would take ~20+ min on 2 cores, so the flow's
``execute`` task is replaced (for this benchmark only) by one that writes, for each valid
candidate, the row the sandbox would: status ``ok`` and the two protocol lines its program
prints (the fake programs have a closed-form optimum), image ``bench:not-executed``. Reviewers
therefore see realistic execution output. ``--sandbox`` keeps the real execution stage (use it
with a few problems only).

Two runs, one after the other, each on a fresh store (so no response-cache hits):
  product  : optfolio's defaults (``n_mode="auto"``: n samples per request, at most
             ``max_n_per_request`` = 16 per request), problems in flight = ``--in-flight``;
  baseline : the same code with ``n_mode="repeat"`` (one request per sample), for tokens only;
             it runs at ``--baseline-latency`` (default 0) since latency does not change tokens.

Printed:
  1. wall time of the LLM stages (the endpoint's first request received → last answer sent,
     which includes every client-side gap) against the floor requests_needed × L / C, where
     requests_needed = Σ_problems ceil(N/16) + V·ceil(m/16) + V·ceil(j/16) (V = valid
     candidates); ratio, target ≤ 1.2. Also the endpoint's idle slot-time and its slot use
     over 20 slices of the span (where idle time sits), and the whole flow's wall time
     (Prefect start, dataset load, assembly) beside it.
  2. tokens billed per problem (prompt + completion, as the endpoint reports them in
     ``usage`` and the tasks write to ``llm_usage``), product against baseline, per stage and
     split into prompt and completion; ratio, target ≤ 0.3. Beside it, the least any client
     can bill with these prompts (every completion, each distinct prompt once).

``--in-flight`` (problems in flight, the flow's ``concurrency``) defaults to C/2: each
problem's review keeps 8 requests outstanding (4 per task's client, evaluator and judge), its
generation 4 (N/16 chunks), so C/2 problems keep C slots busy through both phases.

Usage: python bench/pipeline.py [--problems 100] [--candidates 50] [--latency 0.25]
       [--concurrency 16] [--in-flight C/2] [--baseline-latency 0] [--baseline-problems 100]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # flows/, tasks/ (repo root)

from _fake_endpoint import expected_output, running

ROLES = ("generator", "evaluator", "judge")
MODEL = "bench-model"


# ---- the endpoint ----------------------------------------------------------------------------


def endpoint_call(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


# ---- the dataset and the replaced execution stage --------------------------------------------


def write_dataset(path: Path, problems: int) -> None:
    """``problems`` distinct problems of realistic length: the shipped sample, cycled."""
    from optfolio.datasets import sample_dataset_path

    sample = [json.loads(line) for line in sample_dataset_path().read_text().splitlines() if line]
    with path.open("w") as out:
        for i in range(problems):
            record = dict(sample[i % len(sample)])
            record["id"] = f"bench-{i:03d}"
            record["description"] = f"{record['description']} (Instance {i}.)"
            out.write(json.dumps(record) + "\n")


def unrun_execute_task() -> Any:
    """A stand-in for ``tasks.execute.execute`` with its signature: the rows the sandbox would
    write for the fake endpoint's programs, without Docker."""
    import pyarrow as pa
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    from optfolio.run_config import ProblemRef, SandboxSettings
    from optfolio.run_rows import problem_rows
    from optfolio.schemas import EXECUTIONS
    from optfolio.store import RunStore, part_name

    @task(cache_policy=NO_CACHE, task_run_name="execute-{problem.problem_id}")
    def execute(problem: ProblemRef, sandbox: SandboxSettings) -> str:
        store, run_id, problem_id = RunStore(problem.store), problem.run_id, problem.problem_id
        part = part_name(problem_id)
        rows = []
        for c in problem_rows(store, "candidates", run_id, problem_id):
            expected = expected_output(c["code"]) if c["valid"] and c["code"] else None
            row: dict[str, Any] = {"problem_id": problem_id, "candidate_id": c["candidate_id"]}
            if expected is None:
                row["status"] = "skipped"
            else:
                status, objective = expected
                row |= {
                    "status": "ok",
                    "exit_code": 0,
                    "stdout": f"STATUS: {status}\nOBJECTIVE: {objective}\n",
                    "stderr": "",
                    "stdout_truncated": False,
                    "stderr_truncated": False,
                    "solver_status": status,
                    "objective": objective,
                    "image": "bench:not-executed",
                }
            rows.append(row)
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in EXECUTIONS.names} for row in rows], schema=EXECUTIONS
        )
        return str(store.write_part("executions", run_id, part, table))

    return execute


@contextlib.contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def client_mode(n_mode: str | None) -> Iterator[None]:
    """Every task's LLMSettings with ``n_mode`` (None: the product's own settings untouched)."""
    import optfolio.llm.review_stage
    import tasks.generate

    if n_mode is None:
        yield
        return
    original = optfolio.llm.review_stage.llm_settings

    def settings(endpoint: Any, **options: Any) -> Any:
        return dataclasses.replace(original(endpoint, **options), n_mode=n_mode)

    # review_problem and generate each imported the name into their own module.
    with (
        patched(optfolio.llm.review_stage, "llm_settings", settings),
        patched(tasks.generate, "llm_settings", settings),
    ):
        yield


# ---- one run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    label: str
    latency: float
    slots: int
    flow_s: float
    started: float  # wall clock: flow called
    endpoint: dict[str, Any]  # /stats after the run
    usage: dict[str, dict[str, dict[str, int]]]  # problem → role → counts (llm_usage rows)
    valid: dict[str, int]  # problem → valid candidates
    samples: dict[str, int]  # problem → samples drawn
    candidate_ids: set[str]

    @property
    def llm_span_s(self) -> float:
        return float(self.endpoint["span_s"])


def run_flow(
    label: str,
    url: str,
    dataset: Path,
    work: Path,
    args: argparse.Namespace,
    problems: int,
    latency: float,
    n_mode: str | None,
) -> RunResult:
    import flows.portfolio_run
    from flows.portfolio_run import portfolio_run
    from optfolio.run_config import parse_parameters
    from optfolio.store import RunStore

    endpoint_call(url, "/reset", {"latency": latency, "slots": args.concurrency})
    store_root = work / f"store-{label}"
    endpoint = {"model": MODEL, "base_url": f"{url}/v1"}
    parameters = parse_parameters(
        dataset="jsonl",
        path=str(dataset),
        limit=problems,
        candidates=args.candidates,
        eval_samples=args.eval_samples,
        judge_samples=args.judge_samples,
        generator=endpoint,
        evaluator=endpoint,
        judge=endpoint,
        concurrency=args.in_flight,
        seed=0,
        store=str(store_root),
        run_id=label,
    )
    stages = contextlib.ExitStack()
    if not args.sandbox:
        stages.enter_context(patched(flows.portfolio_run, "execute", unrun_execute_task()))
        stages.enter_context(patched(flows.portfolio_run, "require_sandbox", lambda: None))
    with stages, client_mode(n_mode):
        started = time.time()
        portfolio_run(parameters)
        flow_s = time.time() - started
    stats = endpoint_call(url, "/stats")

    store = RunStore(store_root)
    usage: dict[str, dict[str, dict[str, int]]] = {}
    for row in store.read("llm_usage", [label]).to_pylist():
        usage.setdefault(row["problem_id"], {})[row["role"]] = row
    valid: dict[str, int] = {}
    samples: dict[str, int] = {}
    candidate_ids: set[str] = set()
    for row in store.read("candidates", [label]).to_pylist():
        samples[row["problem_id"]] = samples.get(row["problem_id"], 0) + row["n_samples"]
        valid[row["problem_id"]] = valid.get(row["problem_id"], 0) + int(row["valid"])
        candidate_ids.add(row["candidate_id"])
    return RunResult(
        label, latency, args.concurrency, flow_s, started, stats, usage, valid, samples,
        candidate_ids,
    )  # fmt: skip


# ---- the report ------------------------------------------------------------------------------


def requests_needed(result: RunResult, args: argparse.Namespace, per_request: int) -> int:
    """What the client must send: N samples, then m and j samples per valid candidate, at
    most ``per_request`` samples per request."""

    def chunks(samples: int) -> int:
        return math.ceil(samples / per_request) if samples else 0

    return sum(
        chunks(args.candidates) + v * chunks(args.eval_samples) + v * chunks(args.judge_samples)
        for v in result.valid.values()
    )


def tokens(result: RunResult, problems: list[str]) -> dict[str, dict[str, float]]:
    """Mean tokens per problem over ``problems``: role → prompt / completion / total."""
    table: dict[str, dict[str, float]] = {}
    for role in (*ROLES, "all"):
        roles = ROLES if role == "all" else (role,)
        prompt = sum(result.usage[p].get(r, {}).get("prompt_tokens", 0) for p in problems
                     for r in roles)  # fmt: skip
        completion = sum(result.usage[p].get(r, {}).get("completion_tokens", 0)
                         for p in problems for r in roles)  # fmt: skip
        table[role] = {
            "prompt": prompt / len(problems),
            "completion": completion / len(problems),
            "total": (prompt + completion) / len(problems),
        }
    return table


def report(product: RunResult, baseline: RunResult | None, args: argparse.Namespace) -> None:
    from optfolio.llm.settings import LLMSettings

    per_request = min(LLMSettings().max_n_per_request, 128)
    problems = len(product.valid)
    needed = requests_needed(product, args, per_request)
    floor = needed * product.latency / product.slots
    stats = product.endpoint
    sent = stats["requests"]
    span = product.llm_span_s
    first = float(stats["first_service"]) - product.started
    print(
        f"\n== pipeline benchmark: {problems} problems × N={args.candidates}, "
        f"m={args.eval_samples}, judge samples={args.judge_samples}"
    )
    print(
        f"endpoint: latency L={product.latency:g} s per request, C={product.slots} requests "
        f"served at once; flow: {args.in_flight} problems in flight, "
        f"{LLMSettings().concurrency} requests in flight per task's client"
    )
    print(
        "execution stage: "
        + ("real Docker sandbox" if args.sandbox else "NOT RUN (rows synthesized, see docstring)")
    )
    mean_valid = sum(product.valid.values()) / problems
    mean_samples = sum(product.samples.values()) / problems
    print(f"candidates per problem: {mean_valid:.1f} valid of {mean_samples:.1f} samples")
    print("\n1. wall time of the LLM stages (product client)")
    print(f"   requests needed  {needed}  (sent {sent}; ≤{per_request} samples per request)")
    print(f"   floor            {floor:8.1f} s  = requests × L / C")
    print(f"   LLM stages       {span:8.1f} s  (first request received → last answer sent)")
    print(
        f"   ratio            {span / floor:8.2f} ×  target ≤ 1.2   "
        f"{'OK' if span / floor <= 1.2 else 'MISSED'}"
    )
    print(
        f"   endpoint slots idle {stats['idle_share']:.1%} of the span; "
        f"most requests in flight {stats['max_in_flight']}"
    )
    print(
        "   slot use over the span, 20 slices: "
        + " ".join(f"{u:.0%}" for u in stats["utilization"])
    )
    print(
        f"   whole flow       {product.flow_s:8.1f} s  (start → first request {first:.1f} s, "
        f"last answer → flow end {product.flow_s - first - span:.1f} s: assembly, Prefect)"
    )
    if baseline is None:
        return
    shared = sorted(set(product.usage) & set(baseline.usage))
    same = "identical" if product.candidate_ids >= baseline.candidate_ids else "DIFFERENT"
    print(
        f"\n2. tokens billed per problem (usage as the endpoint reports it), over "
        f"{len(shared)} problems; candidates in both runs: {same}"
    )
    ours, theirs = tokens(product, shared), tokens(baseline, shared)
    print(f"   {'stage':10} {'n-per-request (product)':>32} {'one request per sample':>32}  ratio")
    print(f"   {'':10} {'prompt':>10} {'completion':>10} {'total':>10} "
          f"{'prompt':>10} {'completion':>10} {'total':>10}")  # fmt: skip
    for role in (*ROLES, "all"):
        a, b = ours[role], theirs[role]
        ratio = a["total"] / b["total"] if b["total"] else float("nan")
        print(
            f"   {role:10} {a['prompt']:10.0f} {a['completion']:10.0f} {a['total']:10.0f} "
            f"{b['prompt']:10.0f} {b['completion']:10.0f} {b['total']:10.0f}  {ratio:5.2f}"
        )
    ratio = ours["all"]["total"] / theirs["all"]["total"]
    verdict = "OK" if ratio <= 0.3 else "MISSED"
    print(f"   ratio (all stages) {ratio:.2f} ×  target ≤ 0.3   {verdict}")
    # The least any client can bill without changing the prompts: every completion (the same
    # samples either way) and each distinct prompt once (one per problem for the generator,
    # one per candidate for the evaluator and the judge).
    per_role = {"generator": args.candidates, "evaluator": args.eval_samples}
    per_role["judge"] = args.judge_samples
    least = ours["all"]["completion"] + sum(
        ours[r]["prompt"] / math.ceil(per_role[r] / per_request) for r in ROLES if per_role[r]
    )
    print(
        f"   least any client can bill (completions + each distinct prompt once): {least:.0f}"
        f" per problem = {least / theirs['all']['total']:.2f} × baseline;"
        f" product = {ours['all']['total'] / least:.2f} × that"
    )
    sampled = ("generator", "evaluator")  # the stages that draw several samples per prompt
    a = sum(ours[r]["total"] for r in sampled)
    b = sum(theirs[r]["total"] for r in sampled)
    print(f"   ratio over generator + evaluator only: {a / b:.2f} ×")
    requests_b = baseline.endpoint["requests"]
    print(
        f"   requests: product {sent}, baseline {requests_b} "
        f"(baseline at L={baseline.latency:g} s: {baseline.flow_s:.1f} s flow, tokens only)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=50, help="N samples per problem")
    parser.add_argument("--eval-samples", type=int, default=4, help="m")
    parser.add_argument("--judge-samples", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.25, help="L: seconds per request")
    parser.add_argument("--concurrency", type=int, default=16, help="C: requests served at once")
    parser.add_argument(
        "--in-flight", type=int, default=None, help="Problems in flight (default: C/2)"
    )
    parser.add_argument("--baseline-latency", type=float, default=0.0)
    parser.add_argument(
        "--baseline-problems", type=int, default=None, help="Default: all; 0 skips the baseline"
    )
    parser.add_argument("--sandbox", action="store_true", help="Run candidates in Docker")
    args = parser.parse_args(argv)
    if args.in_flight is None:
        args.in_flight = max(1, args.concurrency // 2)

    with tempfile.TemporaryDirectory(prefix="optfolio-bench-pipeline-") as tmp:
        work = Path(tmp)
        # Embedded Prefect with its own home: no server of another engineer, no telemetry.
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.update(
            PREFECT_HOME=str(work / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
            # It takes ~20 s to start on this loaded machine, Prefect's default limit.
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        )
        dataset = work / "problems.jsonl"
        write_dataset(dataset, args.problems)
        with running(args.latency, args.concurrency) as url:
            product = run_flow(
                "product", url, dataset, work, args, args.problems, args.latency, None
            )
            baseline_problems = (
                args.problems if args.baseline_problems is None else args.baseline_problems
            )
            baseline = None
            if baseline_problems > 0:
                baseline = run_flow(
                    "baseline", url, dataset, work, args,
                    min(baseline_problems, args.problems), args.baseline_latency, "repeat",
                )  # fmt: skip
        report(product, baseline, args)


if __name__ == "__main__":
    main()
