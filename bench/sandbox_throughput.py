"""Benchmark: typical candidates as bare subprocesses, in cold containers, via the warm pool.

    .venv/bin/python bench/sandbox_throughput.py [--rounds 4] [--parallelism 2] [--warm 4]

The same candidates (small LPs/MIPs with each solver package, sandbox/examples.py) run three
ways at the same parallelism, in one run, the two container ways with each code delivery
(bind mount, copy-in through stdin); prints throughput and median latency with ratios to
bare subprocesses, and copy-in against bind mount. Targets: warm pool >= 0.7x bare
throughput, cold >= 0.4x.

Bare subprocesses need the solver packages on the host: a venv with the image's pinned
versions is made once under .cache/ (pip, from PyPI).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox import Sandbox, engine, image, parse_output  # noqa: E402
from sandbox.examples import SOLVER_CANDIDATES  # noqa: E402
from sandbox.result import ExecResult  # noqa: E402

BENCH_VENV = ROOT / ".cache" / "sandbox-bench-venv"


def bare_python() -> Path:
    """A host venv with the Dockerfile's pinned solver packages (made once)."""
    pins = re.findall(r"^\s+([A-Za-z0-9_.-]+==[^\s\\]+)", image.DOCKERFILE.read_text(), re.M)
    stamp = BENCH_VENV / ".pins"
    python = BENCH_VENV / "bin" / "python"
    if not stamp.exists() or stamp.read_text() != "\n".join(pins):
        print(f"making {BENCH_VENV} with {' '.join(pins)}", file=sys.stderr)
        venv.create(BENCH_VENV, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
        stamp.write_text("\n".join(pins))
    return python


def _ok(result: ExecResult) -> bool:
    return result.ok and result.objective is not None


def timed(batch: Callable[[str], bool], codes: list[str], parallelism: int) -> dict[str, float]:
    latencies: list[float] = []

    def one(code: str) -> bool:
        started = time.monotonic()
        ok = batch(code)
        latencies.append(time.monotonic() - started)
        return ok

    started = time.monotonic()
    with ThreadPoolExecutor(parallelism) as executor:
        oks = list(executor.map(one, codes))
    wall = time.monotonic() - started
    return {
        "runs": len(codes),
        "failed": oks.count(False),
        "wall_s": wall,
        "throughput": len(codes) / wall,
        "median_s": statistics.median(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="times each candidate runs")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--warm", type=int, default=4, help="warm pool size")
    args = parser.parse_args()

    codes = [code for _ in range(args.rounds) for _, code, _ in SOLVER_CANDIDATES]
    python = bare_python()
    client = engine.client()
    tag = image.require_image(client)
    scratch = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    files = {}
    for index, (_, code, _) in enumerate(SOLVER_CANDIDATES):
        files[code] = scratch / f"candidate_{index}.py"
        files[code].write_text(code)

    def bare(code: str) -> bool:
        done = subprocess.run(
            [str(python), str(files[code])], capture_output=True, cwd=scratch, timeout=120
        )
        text = done.stdout.decode(errors="replace")
        return done.returncode == 0 and parse_output(text)[1] is not None

    rows = {}
    # One untimed pass of each way first, so page caches are warm for all alike. Code reaches
    # a container by bind mount (a local engine) or copy-in through stdin (any engine).
    timed(bare, codes[: len(SOLVER_CANDIDATES)], args.parallelism)
    rows["bare subprocess"] = timed(bare, codes, args.parallelism)
    for delivery in ("bind", "copy"):
        with Sandbox(client=client, image=tag, delivery=delivery) as cold:
            timed(lambda code: cold.run(code).ok, codes[:2], args.parallelism)
            rows[f"cold, {delivery}"] = timed(
                lambda code: _ok(cold.run(code)), codes, args.parallelism
            )
    for delivery in ("bind", "copy"):
        with Sandbox(client=client, image=tag, warm=args.warm, delivery=delivery) as warm:
            time.sleep(3)  # let the pool fill, as it would while a run prepares its candidates
            rows[f"warm pool, {delivery}"] = timed(
                lambda code: _ok(warm.run(code)), codes, args.parallelism
            )

    base = rows["bare subprocess"]
    print(
        f"{len(codes)} runs ({len(SOLVER_CANDIDATES)} candidates x {args.rounds}), "
        f"parallelism {args.parallelism}, warm pool {args.warm}, image {tag}"
    )
    print(f"{'way':<16} {'runs/s':>7} {'x bare':>7} {'median s':>9} {'x bare':>7} {'failed':>6}")
    for name, row in rows.items():
        print(
            f"{name:<16} {row['throughput']:7.2f} {row['throughput'] / base['throughput']:7.2f}"
            f" {row['median_s']:9.3f} {row['median_s'] / base['median_s']:7.2f}"
            f" {int(row['failed']):6d}"
        )
    print("targets: warm pool >= 0.70x bare throughput, cold >= 0.40x")
    for way in ("cold", "warm pool"):
        bind, copy = rows[f"{way}, bind"], rows[f"{way}, copy"]
        print(
            f"{way}: copy-in / bind mount: throughput"
            f" {copy['throughput'] / bind['throughput']:.2f}x,"
            f" median latency {copy['median_s'] / bind['median_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
