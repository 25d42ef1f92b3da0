"""Fixtures for the LLM layer: one real local model server per test session, and a small
fault-injecting HTTP endpoint (the only fake server in the suite) for retry tests.

The real server loads both local models; tests pick Qwen where answer quality matters (the
roles) and SmolLM2 where it does not (protocol details). In CI a model that is not pulled is
a failure, never a skip: `make test` pulls them first.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from optfolio.llm.settings import LLMSettings
from tests.plugins.ci import prerequisite_missing

QWEN = "qwen2.5-coder-1.5b"
SMOL = "smollm2-135m"


def _require_local_models() -> None:
    from servers.local_model.registry import pulled_models

    missing = [name for name, path in pulled_models().items() if path is None]
    from servers.local_model.llama_abi import LayoutMismatch, library_path

    try:
        library_path()
    except LayoutMismatch as error:
        missing.append(str(error))
    if missing:
        prerequisite_missing(
            f"local model(s) missing: {', '.join(missing)}; run `make local-model`"
        )


@pytest.fixture(scope="session")
def llm_server() -> Iterator[str]:
    """Base URL of the session's real ``serve-local`` with Qwen (default) and SmolLM2."""
    _require_local_models()
    from servers.local_model.endpoint import LocalServer

    with LocalServer([QWEN, SMOL]) as server:
        yield server.base_url


@pytest.fixture
def smol_settings(llm_server: str) -> LLMSettings:
    return LLMSettings(model=SMOL, base_url=llm_server, n_mode="native", max_retries=1)


@pytest.fixture
def qwen_settings(llm_server: str) -> LLMSettings:
    return LLMSettings(model=QWEN, base_url=llm_server, n_mode="native", max_retries=1)


# ---- fault injection -------------------------------------------------------------------------


@dataclass
class Fault:
    """One scripted answer: an HTTP status (with headers and body), a stall, or success."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: a valid chat completion
    delay_s: float = 0.0
    choices: int | None = None  # None: as many as the request's n
    logprobs: bool = True
    texts: tuple[str, ...] | None = None  # the choices' texts, cycled (None: "answer i seed s")


@dataclass
class FaultServer:
    base_url: str
    script: deque[Fault]
    requests: list[dict[str, Any]]
    in_flight: int = 0
    max_in_flight: int = 0
    default: Fault = field(default_factory=Fault)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def then(self, *faults: Fault) -> FaultServer:
        self.script.extend(faults)
        return self


def completion_body(request: dict[str, Any], fault: Fault) -> bytes:
    n = fault.choices if fault.choices is not None else int(request.get("n") or 1)
    seed = request.get("seed")
    choices = []
    for i in range(n):
        text = f"answer {i} seed {seed}" if not fault.texts else fault.texts[i % len(fault.texts)]
        tokens = text.split(" ")
        pieces = [t if j == 0 else " " + t for j, t in enumerate(tokens)]
        logprobs = (
            {
                "content": [
                    {"token": p, "logprob": -0.5, "bytes": None, "top_logprobs": []} for p in pieces
                ]
            }
            if fault.logprobs and request.get("logprobs")
            else None
        )
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        )
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 4 * n,
        "total_tokens": 10 + 4 * n,
        "prompt_tokens_details": {"cached_tokens": 6},
    }
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model"),
        "choices": choices,
        "usage": usage,
    }
    return json.dumps(body).encode()


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """An OpenAI-shaped endpoint that answers from a script of faults, then successes."""
    state = FaultServer(base_url="", script=deque(), requests=[])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.requests.append(request)
                fault = state.script.popleft() if state.script else state.default
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                if fault.delay_s:
                    time.sleep(fault.delay_s)
                body = fault.body if fault.body is not None else completion_body(request, fault)
                try:
                    self.send_response(fault.status)
                    content_type = "application/json" if fault.body is None else "text/plain"
                    self.send_header(
                        "content-type", fault.headers.get("content-type", content_type)
                    )
                    for name, value in fault.headers.items():
                        if name != "content-type":
                            self.send_header(name, value)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first, as the test intended
            finally:
                with state.lock:
                    state.in_flight -= 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
