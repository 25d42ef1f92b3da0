"""Benchmark: a run killed (SIGKILL) mid-generation against one shared ``serve-local``, then
resumed with the same run id, against the same run uninterrupted on the same server.

What runs: one ``serve-local``; ``optfolio run`` (real CLI, embedded Prefect, Docker) on the
shipped sample into a fresh store, uninterrupted; then the same run into a second fresh store,
SIGKILLed (its whole process group) ``--kill-after`` seconds in, once the server is decoding
one of its requests, and run again with the same run id to the end.

Printed: the uninterrupted wall time; the resumed run's wall time and the ratio of the two
(the issue's bound: ≤ 1.2); killed + resumed against uninterrupted; the tokens the server
decoded for the dead run's request after the kill (read from ``/health``: the request's
count at the kill against its final count); how long after the kill the server was idle.

This is a measurement, not a test: nothing is asserted (tests/test_reliability.py asserts
the behaviour on the small model).

Usage: python bench/shared_server_resume.py [--problems 2] [--candidates 4]
       [--eval-samples 2] [--kill-after 45] [--model qwen2.5-coder-1.5b] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optfolio.llm.settings import LOCAL_API_KEY  # noqa: E402
from servers.local_model.endpoint import LocalServer, server_health  # noqa: E402
from servers.local_model.registry import DEFAULT_MODEL, pull  # noqa: E402


def run_command(args: argparse.Namespace, base_url: str, store: str) -> list[str]:
    return [
        *(sys.executable, "-c", "import cli; cli.main()", "run"),
        *("--store", store, "--limit", str(args.problems), "--run-id", "bench"),
        *("--candidates", str(args.candidates), "--eval-samples", str(args.eval_samples)),
        *("--judge-samples", "1", "--model", args.model, "--base-url", base_url),
    ]


def start(command: list[str]) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "OPENAI_API_KEY": LOCAL_API_KEY}
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes all it started
    )


def finish(process: subprocess.Popen[bytes]) -> None:
    _, err = process.communicate()
    if process.returncode != 0:
        sys.exit(f"optfolio run failed ({process.returncode}):\n{err.decode()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--eval-samples", type=int, default=2)
    parser.add_argument("--kill-after", type=float, default=45.0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    pull(args.model, install=False)
    with (
        LocalServer([args.model]) as server,
        tempfile.TemporaryDirectory() as whole_store,
        tempfile.TemporaryDirectory() as killed_store,
    ):
        url = server.base_url
        started = time.perf_counter()
        finish(start(run_command(args, url, whole_store)))
        whole_s = time.perf_counter() - started

        started = time.perf_counter()
        killed = start(run_command(args, url, killed_store))
        while True:
            time.sleep(0.1)
            decoding = server_health(url)["decoding"]
            late = time.perf_counter() - started >= args.kill_after
            if decoding and decoding["decoded"] > 0 and late:
                break
            if killed.poll() is not None:
                sys.exit("the run ended before it could be killed: raise --problems")
        os.killpg(killed.pid, signal.SIGKILL)
        killed_after_s = time.perf_counter() - started
        killed.wait()
        while server_health(url)["queued"] > 0:
            time.sleep(0.02)
        idle_after_kill_s = time.perf_counter() - started - killed_after_s
        dead = next(r for r in server_health(url)["recent"] if r["id"] == decoding["id"])
        past_kill = dead["decoded"] - decoding["decoded"]

        started = time.perf_counter()
        finish(start(run_command(args, url, killed_store)))
        resumed_s = time.perf_counter() - started
    report = {
        "whole_s": round(whole_s, 1),
        "killed_after_s": round(killed_after_s, 1),
        "resumed_s": round(resumed_s, 1),
        "ratio": round(resumed_s / whole_s, 3),
        "ratio_with_killed_part": round((killed_after_s + resumed_s) / whole_s, 3),
        "tokens_decoded_past_kill": past_kill,
        "dead_request_status": dead["status"],
        "idle_after_kill_s": round(idle_after_kill_s, 2),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{args.problems} sample problems, N = {args.candidates}, m = {args.eval_samples}, "
        f"model {args.model}"
    )
    print(f"uninterrupted {whole_s:.1f} s")
    print(
        f"killed after {killed_after_s:.1f} s; the dead run's request: {dead['status']}, "
        f"{past_kill} token(s) decoded past the kill; server idle {idle_after_kill_s:.2f} s later"
    )
    print(
        f"resumed {resumed_s:.1f} s: ratio resumed / uninterrupted {report['ratio']:.2f} "
        f"(bound 1.2); killed part + resumed / uninterrupted "
        f"{report['ratio_with_killed_part']:.2f}"
    )


if __name__ == "__main__":
    main()
