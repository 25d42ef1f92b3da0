"""Decode speed of the local model server with and without log-probs (and of llama_cpp.server
where its extras are installed), on one prompt, in one run. Prints tokens/s and ratios.

Target: with log-probs at least 0.9x the speed without. Greedy decoding (temperature 0) makes
every configuration write the same tokens, so the times compare like with like.

    python bench/local_llm.py [--model qwen2.5-coder-1.5b] [--tokens 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import openai

from optfolio.llm.local import LocalServer, free_port, health_ok
from optfolio.llm.settings import LOCAL_API_KEY
from optfolio.localmodel.registry import pull, resolve

PROMPT = [
    {
        "role": "user",
        "content": "Write a Python function that solves a small knapsack problem with PuLP.",
    }
]


@dataclass
class Result:
    label: str
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def measure(
    base_url: str, model: str, label: str, tokens: int, repeats: int, logprobs: bool
) -> Result:
    client = openai.OpenAI(base_url=base_url, api_key=LOCAL_API_KEY, max_retries=0, timeout=900)
    # Warm-up: loads pages and fills the prompt cache, as in a real run's second request.
    client.chat.completions.create(model=model, messages=PROMPT, max_tokens=4, temperature=0)
    total_tokens, total_seconds = 0, 0.0
    for _ in range(repeats):
        extra = {"logprobs": True, "top_logprobs": 1} if logprobs else {}
        started = time.perf_counter()
        response = client.chat.completions.create(
            model=model, messages=PROMPT, max_tokens=tokens, temperature=0, **extra
        )
        total_seconds += time.perf_counter() - started
        assert response.usage is not None
        total_tokens += response.usage.completion_tokens
        if logprobs:
            content = response.choices[0].logprobs
            assert content is not None and content.content, "no log-probs returned"
    return Result(label, total_tokens, total_seconds)


def llama_cpp_server(path: str, threads: int) -> tuple[subprocess.Popen[bytes], str] | None:
    if importlib.util.find_spec("sse_starlette") is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            path,
            "--port",
            str(port),
            "--n_threads",
            str(threads),
            "--n_ctx",
            "4096",
            "--model_alias",
            "bench",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=2).models.list()
            return process, url
        except openai.APIError:
            time.sleep(0.5)
    process.kill()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    pull(args.model, install=False)
    name, path = resolve(args.model)
    results: list[Result] = []
    with LocalServer([name], threads=args.threads) as server:
        assert health_ok(server.base_url)
        # Alternate the two so machine load drifts affect both alike.
        plain, with_lp = (
            Result("serve-local, no logprobs", 0, 0.0),
            Result("serve-local, logprobs", 0, 0.0),
        )
        for _ in range(args.repeats):
            for target, lp in ((plain, False), (with_lp, True)):
                r = measure(server.base_url, name, target.label, args.tokens, 1, lp)
                target.tokens += r.tokens
                target.seconds += r.seconds
        results += [plain, with_lp]
    upstream = llama_cpp_server(str(path), args.threads)
    if upstream is None:
        print("llama_cpp.server: not installed (pip install 'llama-cpp-python[server]'); skipped")
    else:
        process, url = upstream
        try:
            results.append(
                measure(
                    url, "bench", "llama_cpp.server, no logprobs", args.tokens, args.repeats, False
                )
            )
            results.append(
                measure(url, "bench", "llama_cpp.server, logprobs", args.tokens, args.repeats, True)
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"model {name}, {args.threads} threads, greedy, {args.tokens} tokens x {args.repeats}")
    for r in results:
        print(f"  {r.label:<32} {r.tokens:5d} tokens {r.seconds:7.2f} s  {r.rate:6.2f} tok/s")
    print(
        f"ratio serve-local logprobs / no logprobs: {results[1].rate / results[0].rate:.3f}"
        " (target >= 0.9)"
    )
    if len(results) == 4:
        print(
            f"ratio serve-local logprobs / llama_cpp.server logprobs: "
            f"{results[1].rate / results[3].rate:.2f}"
        )
        print(
            f"ratio llama_cpp.server logprobs / no logprobs: "
            f"{results[3].rate / results[2].rate:.3f}"
        )


if __name__ == "__main__":
    main()
