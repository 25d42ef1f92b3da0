"""Benchmark: a run on the embedded defaults against the local model's own compute bound.

What runs, in one process tree: one ``serve-local`` (the embedded model); then, with the
server idle, its prefill rate (tokens/s reading a long prompt nobody sent before) and its
decode rate at every ``n`` the run will ask for (tokens/s in all, samples decoded side by side);
then ``optfolio run`` (the real CLI: embedded Prefect, the Docker sandbox) on the shipped sample
problems against that server, in a fresh store, so nothing is cached; then, the server idle
again, its decode rate at each step width the run used, at the run's own context length.

The bound is what the model alone needs for the run's requests, read from the server's own
per-request records (``/health``): Σ uncached prompt tokens / prefill rate, plus the decoding.
Two ways to price the decoding, both printed:

- ``bound_s`` (the one ``ratio`` uses): every decode step the run made, at its width (a
  request's samples stop at different lengths, so its last steps advance fewer of them; the
  server counts them), at the time such a step takes alone at the run's mean context.
- ``bound_short_context_s``: completion tokens / decode rate at the request's n, rates taken
  after a short prompt, as if every sample ran full length (the first version of this bench).

The ratio wall / bound says how much of the run is not the model working: idle gaps, Python
and Docker on the model's cores, Prefect. Target ≤ 1.25.

This is a measurement, not a test: nothing is asserted.

Usage: python bench/local_pipeline.py [--problems 2] [--candidates 4] [--eval-samples 2]
       [--judge-samples 1] [--model qwen2.5-coder-1.5b] [--nice -10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optfolio.llm.settings import LOCAL_API_KEY  # noqa: E402
from servers.local_model.endpoint import LocalServer, server_health  # noqa: E402
from servers.local_model.priority import NICE_HELP, SERVER_NICE  # noqa: E402
from servers.local_model.registry import DEFAULT_MODEL, pull  # noqa: E402

RATE_TOKENS = 128  # completion tokens per sample when measuring a decode rate (64: ±20% noise)
CHARS_PER_TOKEN = 4.3  # of PREFILL_PARAGRAPH in Qwen's and SmolLM's tokenizers, about
# Long enough that reading it dominates the request; numbered so no prefix is cached.
PREFILL_PARAGRAPH = (
    "A factory makes chairs and tables from wood and labour; each chair needs 3 units of wood "
    "and 2 hours, each table 5 units of wood and 4 hours; profit is 40 per chair and 70 per "
    "table; there are {i}00 units of wood and {i}50 hours available. "
)


def prefill_rate(client: openai.OpenAI, model: str) -> float:
    """Prompt tokens read per second, from a prompt the server has not seen (one new token)."""
    text = "".join(PREFILL_PARAGRAPH.format(i=i) for i in range(1, 13))
    started = time.perf_counter()
    response = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=1, temperature=0
    )
    seconds = time.perf_counter() - started
    assert response.usage is not None
    details = response.usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details else 0
    return (response.usage.prompt_tokens - cached) / seconds


def decode_rate(client: openai.OpenAI, model: str, n: int, context: int = 0) -> float:
    """Completion tokens per second in all for n samples decoded side by side, RATE_TOKENS
    each, after an already-read prompt of about ``context`` tokens (at least a short one)."""
    ask = "Count from 1 to 1000, separated by commas."
    filler = ""
    while context and len(filler) < CHARS_PER_TOKEN * (context - RATE_TOKENS // 2):
        filler += PREFILL_PARAGRAPH.format(i=len(filler) % 97 + 1)
    messages = [{"role": "user", "content": filler + ask}]
    client.chat.completions.create(model=model, messages=messages, max_tokens=1)  # read it
    started = time.perf_counter()
    response = client.chat.completions.create(
        model=model, messages=messages, max_tokens=RATE_TOKENS, n=n, seed=1
    )
    seconds = time.perf_counter() - started
    assert response.usage is not None
    return response.usage.completion_tokens / seconds


def run_context(records: list[dict[str, Any]]) -> int:
    """The context the run's decode steps saw on average: prompt plus half a sample, weighted
    by tokens decoded."""
    decoded = sum(r["decoded"] for r in records)
    weighted = sum(r["decoded"] * (r["prompt_tokens"] + r["decoded"] / r["n"] / 2) for r in records)
    return round(weighted / decoded) if decoded else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--eval-samples", type=int, default=2)
    parser.add_argument("--judge-samples", type=int, default=1)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--nice", type=int, default=SERVER_NICE, help=NICE_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    pull(args.model, install=False)
    with (
        LocalServer([args.model], nice=args.nice) as server,
        tempfile.TemporaryDirectory() as store,
    ):
        client = openai.OpenAI(
            base_url=server.base_url, api_key=LOCAL_API_KEY, max_retries=0, timeout=3600
        )
        ns = sorted({1, args.candidates, args.eval_samples, args.judge_samples} - {0})
        # A first request pays one-off costs (buffers, page faults) no rate should include.
        client.chat.completions.create(
            model=args.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        prefill = prefill_rate(client, args.model)
        decode = {n: decode_rate(client, args.model, n) for n in ns}
        first_id = max((r["id"] for r in server_health(server.base_url)["recent"]), default=0)
        command = [
            *(sys.executable, "-c", "import cli; cli.main()", "run"),
            *("--store", store, "--limit", str(args.problems), "--run-id", "bench"),
            *("--candidates", str(args.candidates), "--eval-samples", str(args.eval_samples)),
            *("--judge-samples", str(args.judge_samples), "--model", args.model),
            *("--base-url", server.base_url, "--request-timeout", "3600"),
        ]
        environment = {**os.environ, "OPENAI_API_KEY": LOCAL_API_KEY}
        started = time.perf_counter()
        run = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if run.returncode != 0:
            sys.exit(f"optfolio run failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
        state = server_health(server.base_url)
        priority = state["priority"]
        records = [r for r in state["recent"] if r["id"] > first_id and r["status"] == "completed"]
        # /health keeps the last requests only: the run's first one gone means some are missing.
        if min((r["id"] for r in state["recent"]), default=first_id + 1) > first_id + 1:
            print("warning: the server keeps only its last requests; the bound may miss some")
        steps: Counter[int] = Counter()
        for record in records:  # JSON made the widths strings
            steps.update({int(width): count for width, count in record["steps_by_width"].items()})
        context = run_context(records)
        at_context = {w: decode_rate(client, args.model, w, context) for w in sorted(steps)}
    uncached = sum(r["prompt_tokens"] - r["cached_tokens"] for r in records)
    completion = sum(r["decoded"] for r in records)
    read_s = uncached / prefill
    decode_s = sum(count * width / at_context[width] for width, count in steps.items())
    decode_short_s = sum(r["decoded"] / decode.get(r["n"], decode[1]) for r in records)
    model_s = sum(r["seconds"] for r in records)
    bound = read_s + decode_s
    bound_short = read_s + decode_short_s
    report: dict[str, Any] = {
        "wall_s": round(wall, 1),
        "bound_s": round(bound, 1),
        "ratio": round(wall / bound, 3),
        "bound_short_context_s": round(bound_short, 1),
        "ratio_short_context": round(wall / bound_short, 3),
        "requests": len(records),
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "uncached_prompt_tokens": uncached,
        "completion_tokens": completion,
        "run_context_tokens": context,
        "decode_steps_by_width": {str(w): c for w, c in sorted(steps.items())},
        "prefill_tok_s": round(prefill, 2),
        "decode_tok_s": {str(n): round(rate, 2) for n, rate in decode.items()},
        "decode_tok_s_at_run_context": {str(w): round(r, 2) for w, r in at_context.items()},
        "server_busy_s": round(model_s, 1),
        "problems": args.problems,
        "candidates": args.candidates,
        "eval_samples": args.eval_samples,
        "judge_samples": args.judge_samples,
        "server_nice": priority["nice"],
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{args.problems} sample problems, N = {args.candidates}, m = {args.eval_samples}, "
        f"judge samples {args.judge_samples}, model {args.model}, "
        f"server nice {priority['nice']} ({priority['note']})"
    )
    print(
        f"server alone: prefill {prefill:.1f} tok/s; decode after a short prompt "
        + ", ".join(f"n={n} {rate:.1f}" for n, rate in decode.items())
        + f" tok/s; at the run's context ({context} tokens) "
        + ", ".join(f"{w} wide {rate:.1f}" for w, rate in at_context.items())
        + " tok/s"
    )
    print(
        f"run: {len(records)} requests, {report['prompt_tokens']} prompt tokens "
        f"({uncached} uncached), {completion} completion tokens in decode steps "
        + ", ".join(f"{c} {w} wide" for w, c in sorted(steps.items()))
    )
    print(
        f"bound {bound:.1f} s (reading {read_s:.1f} s + decoding {decode_s:.1f} s); "
        f"server busy {model_s:.1f} s; wall {wall:.1f} s"
    )
    print(f"ratio wall / bound: {wall / bound:.2f} (target <= 1.25)")
    print(
        f"short-context bound {bound_short:.1f} s (decoding {decode_short_s:.1f} s): "
        f"ratio {wall / bound_short:.2f}"
    )


if __name__ == "__main__":
    main()
