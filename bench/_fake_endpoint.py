"""A fake OpenAI-compatible chat endpoint for ``bench/pipeline.py`` (a benchmark harness, not
a product default): every request takes a fixed latency, at most ``slots`` are served at once
(more wait in its queue, as on a vLLM server or a rate-limited API), ``n`` is honoured.

Answers are deterministic: choice ``j`` of a request with seed ``s`` is a function of the
prompt and ``s + j``, so a seeded repeat of a request repeats its answers (as vLLM and
optfolio's own local server do) and the one-request-per-sample client (seed ``s + i``, n = 1)
receives exactly the samples the n-per-request client does.

* generator prompts → a short formulation and a ```python PuLP block (2–5 variables) that
  prints ``STATUS: Optimal`` and ``OBJECTIVE: <number>``; its optimum is Σ profit·limit (see
  :func:`expected_output`), with token log-probs when asked;
* evaluator / judge prompts (recognized by their templates) → two short sentences and
  ``SCORE: <n>``.

**Token counting** (for ``usage``): one token per 4 characters, rounded up (OpenAI's rule of
thumb for English), of each message's content plus 4 tokens per message and 3 for the reply's
priming, as OpenAI's chat format adds. Completion tokens are the 4-character pieces of each
choice, the same pieces its log-probs list. As OpenAI and vLLM report it, a request's prompt
counts once however large ``n`` is; completions count per choice.

Run: ``python bench/_fake_endpoint.py --latency 0.25 --slots 16`` prints ``PORT <n>``, then
serves ``POST /v1/chat/completions``, ``GET /stats`` (counters, the service timeline, the peak
of requests in flight at once ``max_in_flight``, and the bearer tokens the clients sent, so a
test can see which API key arrived) and ``POST /reset`` (``{"latency": s, "slots": c}``: zero
the counters, set new values).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
REPLY_PRIMING_TOKENS = 3

PRODUCTS = ["chairs", "tables", "desks", "shelves", "cabinets", "benches", "stools", "lamps"]
RESOURCES = ["machine hours", "labour hours", "wood (m²)", "steel (kg)", "paint (l)"]


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def pieces(text: str) -> list[str]:
    return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return REPLY_PRIMING_TOKENS + sum(
        TOKENS_PER_MESSAGE + count_tokens(str(m.get("content") or "")) for m in messages
    )


def role_of(messages: list[dict[str, Any]]) -> str:
    user = str(messages[-1].get("content") or "") if messages else ""
    if user.startswith("Review a candidate"):
        # The judge's prompt is the evaluator's plus the ground truth.
        return "judge" if "\n# Ground truth" in user else "evaluator"
    return "generator"


def _numbers(digest: bytes, count: int, low: int, high: int, offset: int = 0) -> list[int]:
    return [low + digest[(offset + i) % len(digest)] % (high - low + 1) for i in range(count)]


def generator_answer(digest: bytes) -> str:
    """A plausible candidate: formulation, then a PuLP program with a closed-form optimum."""
    k = 2 + digest[0] % 4
    names = [PRODUCTS[(digest[1] + i) % len(PRODUCTS)] for i in range(k)]
    profit = _numbers(digest, k, 2, 40, 2)
    limit = _numbers(digest, k, 5, 90, 8)
    use = _numbers(digest, k, 1, 6, 14)
    resource = RESOURCES[digest[20] % len(RESOURCES)]
    capacity = sum(u * m for u, m in zip(use, limit, strict=True))
    terms = " + ".join(f"{p} x_{i + 1}" for i, p in enumerate(profit))
    uses = " + ".join(f"{u} x_{i + 1}" for i, u in enumerate(use))
    var_kind = "integer" if digest[21] % 2 else "continuous"
    return (
        f"**Decision variables.** x_i ≥ 0 ({var_kind}): the number of {', '.join(names)} "
        f"to make, i = 1..{k}.\n"
        f"**Objective.** Maximize total profit {terms}.\n"
        f"**Constraints.** Demand: x_i ≤ {', '.join(map(str, limit))} respectively; "
        f"{resource}: {uses} ≤ {capacity}.\n\n"
        "```python\n"
        "import pulp\n\n"
        f"names = {names!r}\n"
        f"profit = {profit!r}\n"
        f"limit = {limit!r}\n"
        f"use = {use!r}\n"
        f"capacity = {capacity}\n\n"
        'model = pulp.LpProblem("plan", pulp.LpMaximize)\n'
        "x = [\n"
        f'    pulp.LpVariable(f"x_{{name}}", lowBound=0, cat="{var_kind.capitalize()}")\n'
        "    for name in names\n"
        "]\n"
        'model += pulp.lpSum(p * v for p, v in zip(profit, x)), "profit"\n'
        "for v, u, name in zip(x, limit, names):\n"
        '    model += v <= u, f"demand_{name}"\n'
        'model += pulp.lpSum(a * v for a, v in zip(use, x)) <= capacity, "resource"\n'
        "model.solve(pulp.PULP_CBC_CMD(msg=False))\n"
        'print("STATUS:", pulp.LpStatus[model.status])\n'
        'print("OBJECTIVE:", pulp.value(model.objective))\n'
        "```\n"
    )


def expected_output(code: str) -> tuple[str, float] | None:
    """What a generated program prints (solver status, objective), read off its data: every
    demand bound is reachable within the resource capacity, so the optimum is Σ profit·limit."""
    found = {
        name: re.search(rf"^{name} = \[([\d, ]*)\]$", code, re.MULTILINE)
        for name in ("profit", "limit")
    }
    if not all(found.values()):
        return None
    profit, limit = ([int(v) for v in m.group(1).split(",")] for m in found.values() if m)
    return "Optimal", float(sum(p * u for p, u in zip(profit, limit, strict=True)))


def review_answer(digest: bytes, role: str) -> str:
    score = 35 + digest[0] % 61
    if role == "judge":
        opening = (
            "The objective reached matches the ground truth"
            if score > 60
            else "The objective reached differs from the ground truth"
        )
    else:
        opening = (
            "Variables, bounds and the objective follow the statement"
            if score > 60
            else "One constraint seems to be missing from the model"
        )
    return f"{opening}; the solver reports an optimum.\nSCORE: {score}"


class Endpoint:
    """Shared state: latency, service slots, counters and the service timeline."""

    def __init__(self, latency: float, slots: int) -> None:
        self.lock = threading.Lock()
        self.reset(latency, slots)

    def reset(self, latency: float, slots: int) -> None:
        with self.lock:
            self.latency = latency
            self.slots_total = slots
            self.slots = threading.BoundedSemaphore(slots)
            self.roles: dict[str, dict[str, int]] = {}
            self.in_flight = 0  # received and not yet answered (queued or in service)
            self.max_in_flight = 0
            # (start, end) of every request's service, for utilization over time.
            self.services: list[tuple[float, float]] = []
            self.first_arrival: float | None = None
            self.bearer_tokens: set[str] = set()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = list(request.get("messages") or [])
        role = role_of(messages)
        n = int(request.get("n") or 1)
        seed = request.get("seed")
        base = json.dumps(messages, sort_keys=True).encode()
        choices, completion = [], 0
        for j in range(n):
            salt = f"{int(seed) + j}" if seed is not None else f"r{time.time_ns()}-{j}"
            digest = hashlib.sha256(base + b"\x00" + salt.encode()).digest()
            text = generator_answer(digest) if role == "generator" else review_answer(digest, role)
            parts = pieces(text)
            completion += len(parts)
            logprobs = None
            if request.get("logprobs"):
                logprobs = {
                    "content": [
                        {
                            "token": piece,
                            "logprob": -(((digest[i % 32] + 1) / 256.0) ** 2),
                            "bytes": None,
                            "top_logprobs": [],
                        }
                        for i, piece in enumerate(parts)
                    ]
                }
            choices.append(
                {
                    "index": j,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                }
            )
        prompt = prompt_tokens(messages)
        with self.lock:
            counts = self.roles.setdefault(
                role, {"requests": 0, "samples": 0, "prompt_tokens": 0, "completion_tokens": 0}
            )
            counts["requests"] += 1
            counts["samples"] += n
            counts["prompt_tokens"] += prompt
            counts["completion_tokens"] += completion
        return {
            "id": f"chatcmpl-{hashlib.sha256(base).hexdigest()[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }

    def stats(self) -> dict[str, Any]:
        with self.lock:
            services = sorted(self.services)
            busy = sum(end - start for start, end in services)
            span = (max(e for _, e in services) - services[0][0]) if services else 0.0
            return {
                "latency": self.latency,
                "slots": self.slots_total,
                "roles": self.roles,
                "requests": len(services),
                "busy_slot_s": busy,
                "first_service": services[0][0] if services else None,
                "last_done": max(e for _, e in services) if services else None,
                "span_s": span,
                "max_in_flight": self.max_in_flight,
                "bearer_tokens": sorted(self.bearer_tokens),
                "idle_share": idle_share(services, self.slots_total),
                "utilization": utilization(services, self.slots_total),
            }


def idle_share(services: list[tuple[float, float]], slots: int) -> float:
    """Share of slot-time left unused between the first service start and the last end."""
    if not services:
        return 0.0
    start, end = services[0][0], max(e for _, e in services)
    busy = sum(e - s for s, e in services)
    return 1.0 - busy / (slots * (end - start)) if end > start else 0.0


def utilization(services: list[tuple[float, float]], slots: int, bins: int = 20) -> list[float]:
    """Busy share of the slots in each of ``bins`` equal slices of the span: shows whether
    idle time sits in the ramp, the drain or throughout."""
    if not services:
        return []
    start, end = services[0][0], max(e for _, e in services)
    width = (end - start) / bins or 1.0
    busy = [0.0] * bins
    for s, e in services:
        first, last = int((s - start) / width), min(int((e - start) / width), bins - 1)
        for b in range(first, last + 1):
            lo, hi = start + b * width, start + (b + 1) * width
            busy[b] += max(0.0, min(e, hi) - max(s, lo))
    return [round(b / (slots * width), 3) for b in busy]


def serve(latency: float, slots: int, port: int) -> None:
    endpoint = Endpoint(latency, slots)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints: no reconnect per request

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("content-length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/stats":
                self._send(200, endpoint.stats())
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") == "/reset":
                body = self._body()
                endpoint.reset(
                    float(body.get("latency", endpoint.latency)),
                    int(body.get("slots", endpoint.slots_total)),
                )
                self._send(200, {"ok": True})
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": "not found"}})
                return
            request = self._body()
            authorization = self.headers.get("authorization") or ""
            with endpoint.lock:
                if authorization.startswith("Bearer "):
                    endpoint.bearer_tokens.add(authorization.removeprefix("Bearer "))
                endpoint.in_flight += 1
                endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                slots, latency = endpoint.slots, endpoint.latency
            try:
                with slots:
                    # Wall-clock times, so the bench can place them on its own timeline.
                    started = time.time()
                    body = endpoint.answer(request)
                    # Building the answer is part of the fixed latency, not added to it.
                    time.sleep(max(0.0, latency - (time.time() - started)))
                    ended = time.time()
                with endpoint.lock:
                    endpoint.services.append((started, ended))
                self._send(200, body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with endpoint.lock:
                    endpoint.in_flight -= 1

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512  # many clients connect at once; the default backlog is 5

    server = Server(("127.0.0.1", port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


@contextlib.contextmanager
def running(latency: float, slots: int = 16) -> Iterator[str]:
    """This endpoint in its own process (its CPU must not share the caller's GIL); yields its
    root URL (``/v1``, ``/stats`` and ``/reset`` hang below it)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--latency", str(latency)]
    process = subprocess.Popen(
        [*command, "--slots", str(slots)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError(f"fake endpoint did not start: {line}")
        yield f"http://127.0.0.1:{line[1]}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.25, help="Seconds per request")
    parser.add_argument("--slots", type=int, default=16, help="Requests served at once")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    serve(args.latency, args.slots, args.port)


if __name__ == "__main__":
    sys.exit(main())
