"""Decode speed of the local model server with and without log-probs, on one prompt, in one
run. Prints tokens/s and ratios.

Target: with log-probs at least 0.9x the speed without. Greedy decoding (temperature 0) makes
every configuration write the same tokens, so the times compare like with like.

Then n = 1 against n = 6 samples of one request (log-probs on, temperature 1, tokens/s in all,
counted from the choices' log-probs since some servers' usage counts one choice): serve-local,
and llama.cpp's own server from the same ``xllamacpp`` wheel whose library serve-local calls,
with 6 parallel slots on the same model and threads.

    python bench/local_llm.py [--model qwen2.5-coder-1.5b] [--tokens 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from dataclasses import dataclass

import openai

from optfolio.llm.settings import LOCAL_API_KEY
from servers.local_model.endpoint import LocalServer, free_port, health_ok
from servers.local_model.registry import pull, resolve

PROMPT = [
    {
        "role": "user",
        "content": "Write a Python function that solves a small knapsack problem with PuLP.",
    }
]


@dataclass
class Result:
    label: str
    rates: list[float]  # tokens/s of each timed request

    @property
    def rate(self) -> float:
        # The median: other work on a shared machine makes single requests slow at random.
        return statistics.median(self.rates) if self.rates else float("nan")


def timed_request(client: openai.OpenAI, model: str, tokens: int, logprobs: bool) -> float:
    extra = {"logprobs": True, "top_logprobs": 1} if logprobs else {}
    started = time.perf_counter()
    response = client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=tokens, temperature=0, **extra
    )
    seconds = time.perf_counter() - started
    assert response.usage is not None
    if logprobs:
        content = response.choices[0].logprobs
        assert content is not None and content.content, "no log-probs returned"
    return response.usage.completion_tokens / seconds


def measure_pair(base_url: str, model: str, name: str, tokens: int, repeats: int) -> list[Result]:
    """Alternate requests without and with log-probs so load drifts hit both alike."""
    client = openai.OpenAI(base_url=base_url, api_key=LOCAL_API_KEY, max_retries=0, timeout=900)
    # Warm-up: pages the weights in and fills the prompt cache, as in a run's later requests.
    client.chat.completions.create(model=model, messages=PROMPT, max_tokens=4, temperature=0)
    plain, with_lp = Result(f"{name}, no logprobs", []), Result(f"{name}, logprobs", [])
    for _ in range(repeats):
        plain.rates.append(timed_request(client, model, tokens, False))
        with_lp.rates.append(timed_request(client, model, tokens, True))
    return [plain, with_lp]


def sampled_rate(base_url: str, model: str, n: int, tokens: int) -> float:
    """Tokens/s in all for one request of n samples with log-probs, after a warm-up."""
    client = openai.OpenAI(base_url=base_url, api_key=LOCAL_API_KEY, max_retries=0, timeout=900)
    client.chat.completions.create(model=model, messages=PROMPT, max_tokens=4, temperature=0)
    started = time.perf_counter()
    response = client.chat.completions.create(
        model=model,
        messages=PROMPT,
        max_tokens=tokens,
        temperature=1.0,
        n=n,
        seed=1,
        logprobs=True,
        top_logprobs=1,
    )
    seconds = time.perf_counter() - started
    decoded = sum(len(c.logprobs.content) for c in response.choices if c.logprobs is not None)
    return decoded / seconds


def xllamacpp_rates(path: str, threads: int, tokens: int) -> dict[int, float] | None:
    """n = 1 and n = 6 on xllamacpp's in-process server, if the package is installed."""
    if importlib.util.find_spec("xllamacpp") is None:
        return None
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_parallel = 6
    params.n_ctx = 4096 * 6  # split among the slots: 4096 each, as serve-local
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.port = free_port()
    server = xllamacpp.Server(params)
    url = server.listening_address + "/v1"
    return {n: sampled_rate(url, "bench", n, tokens) for n in (1, 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    pull(args.model, install=False)
    name, path = resolve(args.model)
    results: list[Result] = []
    with LocalServer([name], threads=args.threads) as server:
        assert health_ok(server.base_url)
        results += measure_pair(server.base_url, name, "serve-local", args.tokens, args.repeats)
        sampled = {n: sampled_rate(server.base_url, name, n, args.tokens) for n in (1, 6)}
    # Not beside serve-local: two llama.cpp thread pools on the same cores slow each other.
    xllamacpp_sampled = xllamacpp_rates(str(path), args.threads, args.tokens)
    print(
        f"model {name}, {args.threads} threads, greedy, {args.tokens} tokens, {args.repeats} rounds"
    )
    for r in results:
        each = " ".join(f"{x:.1f}" for x in r.rates)
        print(f"  {r.label:<32} median {r.rate:6.2f} tok/s  (each: {each})")
    print(
        f"ratio serve-local logprobs / no logprobs: {results[1].rate / results[0].rate:.3f}"
        " (target >= 0.9)"
    )
    print(f"n = 1 vs n = 6 samples (log-probs, temperature 1), {args.tokens} tokens each:")
    print(f"  serve-local   n=1 {sampled[1]:6.2f}  n=6 {sampled[6]:6.2f} tok/s in all")
    if xllamacpp_sampled is None:
        print("  xllamacpp: not installed (pip install xllamacpp); skipped")
    else:
        one, six = xllamacpp_sampled[1], xllamacpp_sampled[6]
        print(f"  xllamacpp     n=1 {one:6.2f}  n=6 {six:6.2f} tok/s in all")
        print(
            f"ratio serve-local / xllamacpp: n=1 {sampled[1] / xllamacpp_sampled[1]:.2f}, "
            f"n=6 {sampled[6] / xllamacpp_sampled[6]:.2f}"
        )


if __name__ == "__main__":
    main()
