"""Load: the SQL assembly over 10k problems of synthetic candidates, and two concurrent runs.

    .venv/bin/python bench/load.py assembly [--problems 10000] [--candidates 20] [--samples 4]
    .venv/bin/python bench/load.py concurrent [--limit 3] [--candidates 4]

``assembly`` writes a synthetic run (problems, candidates with log-probs, executions, m
evaluator scores and one judgment per valid candidate; one part per 1000 problems) and
assembles it twice, each in a fresh process: ``materialized`` (how assembly worked before:
each view fetched into an Arrow table in Python, then written) and ``streamed``
(``assemble_run``, the task's own function: DuckDB's ``COPY ... TO`` under the run's
``duckdb_memory_limit``). Prints wall time and peak RSS (VmHWM) side by side with their
ratio, and rows out.

``concurrent`` starts two ``optfolio run`` processes at once on one store (different run ids),
against the fake OpenAI-compatible endpoint (``bench/_fake_endpoint.py``, zero latency) and
the real Docker sandbox; each has its own embedded Prefect (its own PREFECT_HOME). Prints
each one's wall time, exit status and peak RSS (``wait4``: the largest of the process and
the children it waited for).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _fake_endpoint as fake_endpoint  # noqa: E402
from optfolio.schemas import CANDIDATES, EXECUTIONS, JUDGMENTS, PROBLEMS, SCORES  # noqa: E402
from optfolio.store import RunStore  # noqa: E402

RUN = "load"
CHUNK = 1000  # problems per part


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_synthetic_run(
    store: RunStore, problems: int, per_problem: int, samples: int, run_id: str = RUN
) -> None:
    """A finished run's stage tables: every 10th candidate invalid (⊥); valid candidates hit
    the truth 1 time in 3 (``objective`` = truth), else miss by 10%; evaluator scores and
    judgments are integers 1..100. Seeded: the same arguments write the same tables."""
    rng = np.random.default_rng(0)
    for start in range(0, problems, CHUNK):
        n_problems = min(CHUNK, problems - start)
        count = n_problems * per_problem
        ids = np.array([f"p{i:06d}" for i in range(start, start + n_problems)])
        truth = rng.integers(10, 1000, n_problems).astype(float)
        problem_ids = np.repeat(ids, per_problem)
        candidate_ids = np.array([f"{p}-c{j:02d}" for p in ids for j in range(per_problem)])
        valid = (np.arange(count) % 10) != 9
        tokens = rng.integers(50, 400, count).astype(np.int32)
        means = -rng.gamma(2.0, 0.2, count)
        part = f"part-{start:06d}"
        store.write_part(
            "problems",
            run_id,
            part,
            pa.table(
                {
                    "problem_id": ids,
                    "dataset": ["synthetic"] * n_problems,
                    "description": [f"problem {i}" for i in ids],
                    "objective_truth": truth,
                    "solution_truth": [None] * n_problems,
                    "source": [None] * n_problems,
                },
                schema=PROBLEMS,
            ),
        )
        store.write_part(
            "candidates",
            run_id,
            part,
            pa.table(
                {
                    "problem_id": problem_ids,
                    "candidate_id": candidate_ids,
                    "n_samples": np.ones(count, np.int32),
                    "sample_indices": [None] * count,
                    "text": [None] * count,
                    "formulation": [None] * count,
                    "code": np.where(valid, "print(1)", None),
                    "solver": [None] * count,
                    "valid": valid,
                    "invalid_reason": np.where(valid, None, "no code"),
                    "token_count": tokens,
                    "logprob_sum": means * tokens,
                    "logprob_mean": means,
                    "finish_reason": ["stop"] * count,
                    "model": ["synthetic"] * count,
                    "human_rank": [None] * count,
                },
                schema=CANDIDATES,
            ),
        )
        hits = (np.arange(count) % 3) == 0
        objective = np.repeat(truth, per_problem) * np.where(hits, 1.0, 1.1)
        store.write_part(
            "executions",
            run_id,
            part,
            pa.table(
                {
                    "problem_id": problem_ids,
                    "candidate_id": candidate_ids,
                    "status": np.where(valid, "ok", "skipped"),
                    "exit_code": np.where(valid, 0, None),
                    "stdout": [None] * count,
                    "stderr": [None] * count,
                    "stdout_truncated": [None] * count,
                    "stderr_truncated": [None] * count,
                    "runtime_s": np.where(valid, 0.5, None),
                    "solver_status": np.where(valid, "Optimal", None),
                    # NaN → null: ⊥ has no objective
                    "objective": pa.array(np.where(valid, objective, np.nan), from_pandas=True),
                    "image": ["synthetic"] * count,
                },
                schema=EXECUTIONS,
            ),
        )
        scored = np.flatnonzero(valid)
        store.write_part(
            "scores",
            run_id,
            part,
            pa.table(
                {
                    "problem_id": np.repeat(problem_ids[scored], samples),
                    "candidate_id": np.repeat(candidate_ids[scored], samples),
                    "sample_index": np.tile(np.arange(samples, dtype=np.int32), scored.size),
                    "score": rng.integers(1, 101, scored.size * samples).astype(float),
                    "raw_text": [None] * (scored.size * samples),
                    "model": ["synthetic"] * (scored.size * samples),
                    "reasked": [False] * (scored.size * samples),
                },
                schema=SCORES,
            ),
        )
        judge = rng.integers(1, 101, scored.size).astype(float)
        store.write_part(
            "judgments",
            run_id,
            part,
            pa.table(
                {
                    "problem_id": problem_ids[scored],
                    "candidate_id": candidate_ids[scored],
                    "sample_index": np.zeros(scored.size, np.int32),
                    "score": judge,
                    "normalized_score": (judge - 1) / 99,
                    "raw_text": [None] * scored.size,
                    "model": ["synthetic"] * scored.size,
                    "reasked": [False] * scored.size,
                },
                schema=JUDGMENTS,
            ),
        )


def assemble(store: RunStore, run_id: str = RUN) -> dict[str, str]:
    """What the flow's assemble task does, with the flow's default parameters."""
    from optfolio.run_config import PortfolioRunParameters, RunRef
    from tasks.assemble import assemble_run

    return assemble_run.fn(RunRef(store=str(store.root), run_id=run_id), PortfolioRunParameters())


def assemble_materialized(store: RunStore, run_id: str = RUN) -> dict[str, str]:
    """The assembly as it was before views were streamed: each view fetched into an Arrow
    table in Python (no DuckDB memory limit), then written; kept here as the baseline."""
    from optfolio import warehouse
    from optfolio.run_config import PortfolioRunParameters
    from tasks.assemble import RUN_OUTPUTS

    settings = warehouse.AssemblySettings.from_parameters(PortfolioRunParameters())
    written = {}
    with warehouse.connect(store, [run_id], settings) as con:
        for view in RUN_OUTPUTS:
            table = con.sql(f"select * from {view}").to_arrow_table()
            path = f"assembled/{view}/run_id={run_id}/part-0.parquet"
            written[view] = str(store.write_file(path, table.drop_columns(["run_id"])))
    return written


ASSEMBLERS = {"materialized": assemble_materialized, "streamed": assemble}


def measure_assembly(store: RunStore, method: str) -> dict[str, object]:
    """Assemble with METHOD in this process: wall time, peak RSS and rows per view."""
    import pyarrow.parquet as pq

    before = peak_rss_mb()
    started = time.monotonic()
    outputs = ASSEMBLERS[method](store)
    wall = time.monotonic() - started
    rows = {view: pq.read_metadata(path).num_rows for view, path in outputs.items()}
    return {"wall_s": wall, "peak_rss_mb": peak_rss_mb(), "before_mb": before, "rows": rows}


def measure_in_fresh_process(store: RunStore, method: str) -> dict[str, object]:
    # A fresh process each, so one method's high-water mark is not the other's.
    command = [sys.executable, __file__, "assemble-once", str(store.root), method]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(output.stdout.splitlines()[-1])


def bench_assembly(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch:
        store = RunStore(scratch)
        started = time.monotonic()
        write_synthetic_run(store, args.problems, args.candidates, args.samples)
        written_s = time.monotonic() - started
        results = {method: measure_in_fresh_process(store, method) for method in ASSEMBLERS}
    print(
        f"{args.problems} problems x {args.candidates} candidates, m={args.samples},"
        f" 1 judgment per valid candidate (written in {written_s:.1f} s)"
    )
    old, new = results["materialized"], results["streamed"]
    print(f"{'':16}{'materialized':>14}{'streamed':>12}{'ratio':>8}")
    for label, key, unit in (("wall time", "wall_s", "s"), ("peak RSS", "peak_rss_mb", "MiB")):
        print(
            f"{label + ' (' + unit + ')':16}{old[key]:>14.1f}{new[key]:>12.1f}"
            f"{new[key] / old[key]:>8.2f}"
        )
    per_1000 = 1000 / args.problems
    print(
        f"{'s per 1000 pb.':16}{old['wall_s'] * per_1000:>14.2f}{new['wall_s'] * per_1000:>12.2f}"
    )
    print(f"RSS before assembly: {new['before_mb']:.0f} MiB")
    if old["rows"] != new["rows"]:
        raise SystemExit(f"rows differ: {old['rows']} vs {new['rows']}")
    print("rows out: " + ", ".join(f"{view}={count:,}" for view, count in new["rows"].items()))


def bench_concurrent(args: argparse.Namespace) -> None:
    from sandbox import engine, image

    with engine.session() as client:
        image.build(client, log=lambda line: None)
    with (
        fake_endpoint.running(latency=0) as url,
        tempfile.TemporaryDirectory(prefix="bench-concurrent-") as scratch,
    ):
        runs = start_concurrent_runs(Path(scratch), f"{url}/v1", args.limit, args.candidates)
        for run_id, outcome in runs.items():
            print(
                f"{run_id}: exit {outcome['returncode']}, wall {outcome['wall_s']:.1f} s,"
                f" peak RSS {outcome['peak_rss_mb']:.0f} MiB"
            )
            if outcome["returncode"] != 0:
                print(outcome["output"][-2000:])


def start_concurrent_runs(
    scratch: Path, base_url: str, limit: int, candidates: int, run_ids: tuple[str, ...] = ("a", "b")
) -> dict[str, dict[str, object]]:
    """``optfolio run`` twice at once on ``scratch/store``; each with its own PREFECT_HOME.
    Returns per run id: return code, wall time, peak RSS (MiB) and the combined output."""
    processes = {}
    for run_id in run_ids:
        home = scratch / f"prefect-{run_id}"
        home.mkdir()
        env = {**os.environ, "PREFECT_HOME": str(home), "OPENAI_API_KEY": "unused"}
        log = (scratch / f"{run_id}.log").open("w")
        command = [
            str(Path(sys.executable).parent / "optfolio"),
            "run",
            "--limit",
            str(limit),
            "--candidates",
            str(candidates),
            "--eval-samples",
            "2",
            "--judge-samples",
            "1",
            "--model",
            "fake",
            "--base-url",
            base_url,
            "--store",
            str(scratch / "store"),
            "--run-id",
            run_id,
            "--timeout",
            "30",
        ]
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        processes[run_id] = (process, started, log)
    outcomes: dict[str, dict[str, object]] = {}
    while len(outcomes) < len(processes):
        pid, status, usage = os.wait4(-1, 0)
        for run_id, (process, started, log) in processes.items():
            if process.pid == pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                log.close()
                outcomes[run_id] = {
                    "returncode": process.returncode,
                    "wall_s": time.monotonic() - started,
                    "peak_rss_mb": usage.ru_maxrss / 1024,
                    "output": (scratch / f"{run_id}.log").read_text(),
                }
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    assembly = sub.add_parser("assembly")
    assembly.add_argument("--problems", type=int, default=10_000)
    assembly.add_argument("--candidates", type=int, default=20)
    assembly.add_argument("--samples", type=int, default=4)
    once = sub.add_parser("assemble-once", help="one assembly of an existing store (internal)")
    once.add_argument("store")
    once.add_argument("method", choices=sorted(ASSEMBLERS))
    concurrent = sub.add_parser("concurrent")
    concurrent.add_argument("--limit", type=int, default=3)
    concurrent.add_argument("--candidates", type=int, default=4)
    args = parser.parse_args()
    if args.what == "assemble-once":
        print(json.dumps(measure_assembly(RunStore(args.store), args.method)))
    else:
        bench_assembly(args) if args.what == "assembly" else bench_concurrent(args)


if __name__ == "__main__":
    main()
