"""``serve-local``: GGUF models on loopback over the OpenAI chat-completions API.

Supports what optfolio's client sends (temperature, top_p, seed, stop, max_tokens or
max_completion_tokens, ``n > 1``, ``logprobs`` with ``top_logprobs``) and answers with usage
counts, ``/v1/models`` and ``/health``. Several models can be loaded at once; a request picks
one by its ``model`` field. No streaming, tools or images: those get a 400, not silence.

Requests are served one at a time, first come first served. A request whose client has gone
(a killed run, a client timeout) stops decoding within one token, and one still queued never
starts: otherwise a resumed run's requests, and each retry, wait behind work nobody reads.
``/health`` says how busy the server is (``queued``) and what it did with the last requests.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations, and
# ``Request`` is imported inside ``create_app`` (the ``local`` extra's packages load lazily).
import argparse
import asyncio
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from servers.local_model.engine import (
    Abandoned,
    Completion,
    Engine,
    RequestError,
    SamplingParams,
)
from servers.local_model.priority import NICE_HELP, SERVER_NICE, claim_cpu
from servers.local_model.registry import KNOWN_MODELS, resolve

log = logging.getLogger("servers.local_model")

MAX_N = 128
MAX_TOP_LOGPROBS = 20
DISCONNECT_POLL_S = 0.2  # how soon a gone client's request stops
PROGRESS_AFTER_S = 2.0  # a request not answered by then streams progress bytes, then its body
PROGRESS_EVERY_S = 1.0
RECENT_REQUESTS = 64  # kept for /health


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(part.type != "text" for part in self.content):
                raise RequestError("only text content parts are supported")
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    # Unknown OpenAI fields (user, metadata, ...) are accepted and ignored, as servers do.
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    stream: bool = False
    tools: list[Any] | None = None


@dataclass(frozen=True)
class RequestRecord:
    """What the server did with one request: ``completed``, or ``abandoned`` (client gone)
    after ``decoded`` completion tokens (0: it never started). ``prompt_tokens`` and
    ``cached_tokens`` (of those, reused from the KV cache) are known once it completed, and
    ``steps_by_width``: its decode steps by how many samples each advanced."""

    id: int
    model: str
    n: int
    status: str
    decoded: int
    seconds: float
    prompt_tokens: int = 0
    cached_tokens: int = 0
    steps_by_width: dict[int, int] = field(default_factory=dict)


class ModelPool:
    """The loaded engines; requests run one at a time (decoding already uses every core)."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        if not engines:
            raise ValueError("no model to serve")
        self.engines = {engine.name: engine for engine in engines}
        self.default = engines[0].name
        self.lock = threading.Lock()
        self.started = int(time.time())
        self._ids = itertools.count(1)
        self._state_lock = threading.Lock()
        self.waiting = 0  # requests accepted and not finished, the one decoding included
        self.recent: deque[RequestRecord] = deque(maxlen=RECENT_REQUESTS)
        self.totals = {"completed": 0, "abandoned": 0, "abandoned_tokens": 0}
        self.current: tuple[int, Engine] | None = None  # the request holding the model
        self.priority: dict[str, Any] | None = None  # what claim_cpu got, once serving

    def next_id(self) -> int:
        with self._state_lock:
            self.waiting += 1
            return next(self._ids)

    def record(self, entry: RequestRecord) -> None:
        with self._state_lock:
            self.waiting -= 1
            self.recent.append(entry)
            self.totals[entry.status] = self.totals.get(entry.status, 0) + 1
            if entry.status == "abandoned":
                self.totals["abandoned_tokens"] += entry.decoded

    def health(self) -> dict[str, Any]:
        with self._state_lock:
            return {
                "status": "ok",
                "models": list(self.engines),
                "queued": self.waiting,
                "decoding": self._decoding(),
                "priority": self.priority,
                **self.totals,
                "recent": [asdict(entry) for entry in self.recent],
            }

    def _decoding(self) -> dict[str, Any] | None:
        current = self.current
        if current is None:
            return None
        request_id, engine = current
        return {"id": request_id, "model": engine.name, "decoded": engine.decoding}

    def progress(self) -> int:
        """llama_decode calls made so far, all engines: it moves while the server works."""
        return sum(engine.decode_calls for engine in self.engines.values())

    def pick(self, name: str | None) -> Engine:
        if not name:
            return self.engines[self.default]
        engine = self.engines.get(name) or self.engines.get(Path(name).stem)
        if engine is None:
            raise LookupError(name)
        return engine


def create_app(pool: ModelPool) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="optfolio serve-local", docs_url=None, redoc_url=None)

    def error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(status_code=status, content=body)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(
            400, f"{where}: {first.get('msg', 'invalid request')}", "invalid_request_error"
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        return pool.health()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": pool.started, "owned_by": "optfolio"}
            for name in pool.engines
        ]
        return {"object": "list", "data": data}

    # The model runs in a worker thread, so the event loop keeps answering /health and can
    # watch this request's connection while a long generation holds the model.
    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: ChatRequest, http: Request) -> dict[str, Any] | JSONResponse:
        if request.stream:
            return error(400, "stream=true is not supported", "invalid_request_error")
        if request.tools:
            return error(400, "tools are not supported", "invalid_request_error")
        try:
            engine = pool.pick(request.model)
        except LookupError:
            return error(
                404,
                f"model {request.model!r} is not loaded; loaded: {', '.join(pool.engines)}",
                "invalid_request_error",
                "model_not_found",
            )
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        params = SamplingParams(
            n=request.n,
            max_tokens=request.max_completion_tokens or request.max_tokens or 1024,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=tuple(s for s in stop if s),
            top_logprobs=(request.top_logprobs or 0) if request.logprobs else 0,
        )
        try:
            messages = [{"role": m.role, "content": m.text()} for m in request.messages]
            # Refused now, with its 400, rather than after a wait in the queue, when the
            # progress bytes below have already committed the response to 200.
            prompt = await asyncio.to_thread(engine.check_prompt, messages)
        except RequestError as exc:
            return error(400, str(exc), "invalid_request_error")
        request_id = pool.next_id()
        gone = threading.Event()
        accepted = time.perf_counter()

        def generate() -> tuple[Completion, float]:
            with pool.lock:
                started = time.perf_counter()
                pool.current = (request_id, engine)
                try:
                    return engine.complete(prompt, params, abandoned=gone.is_set), started
                finally:
                    pool.current = None

        def outcome(
            work: asyncio.Future[tuple[Completion, float]],
        ) -> dict[str, Any] | JSONResponse:
            """Records the finished request; its response."""
            try:
                completion, started = work.result()
            except Abandoned as exc:
                pool.record(
                    RequestRecord(
                        request_id,
                        engine.name,
                        params.n,
                        "abandoned",
                        exc.decoded,
                        time.perf_counter() - accepted,
                    )
                )
                log.info(
                    "%s n=%d abandoned by its client after %d token(s)",
                    engine.name,
                    params.n,
                    exc.decoded,
                )
                return error(499, "the client closed the request", "client_closed_request")
            elapsed = time.perf_counter() - started
            pool.record(
                RequestRecord(
                    request_id,
                    engine.name,
                    params.n,
                    "completed",
                    completion.completion_tokens,
                    elapsed,
                    completion.prompt_tokens,
                    completion.cached_prompt_tokens,
                    completion.steps_by_width,
                )
            )
            log.info(
                "%s n=%d prompt=%d (cached %d) completion=%d in %.2fs (waited %.2fs)",
                engine.name,
                params.n,
                completion.prompt_tokens,
                completion.cached_prompt_tokens,
                completion.completion_tokens,
                elapsed,
                started - accepted,
            )
            return render(engine.name, completion, logprobs=request.logprobs)

        work = asyncio.ensure_future(asyncio.to_thread(generate))
        quick = time.perf_counter() + PROGRESS_AFTER_S
        while not work.done() and time.perf_counter() < quick:
            await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
            if not work.done() and not gone.is_set() and await http.is_disconnected():
                gone.set()  # the worker stops at its next token, or never starts
        if work.done():
            return outcome(work)

        async def progress_then_body() -> AsyncIterator[bytes]:
            # A long wait (queued behind others, or a long generation) sends a space, which
            # JSON ignores before the body, each time the server has decoded more since the
            # last one: a client's read timeout then measures a server that stopped working,
            # not a busy one, and it never gives up on, and retries, work under way.
            seen = pool.progress()
            try:
                while not work.done():
                    await asyncio.wait({work}, timeout=PROGRESS_EVERY_S)
                    if not work.done() and pool.progress() != seen:
                        seen = pool.progress()
                        yield b" "
                answer = outcome(work)
                if isinstance(answer, JSONResponse):
                    yield bytes(answer.body)
                else:
                    yield json.dumps(answer).encode()
            finally:
                if not work.done():  # the client went (Starlette cancelled this stream)
                    gone.set()
                    work.add_done_callback(outcome)

        return StreamingResponse(progress_then_body(), media_type="application/json")

    return app


def render(model: str, completion: Completion, *, logprobs: bool) -> dict[str, Any]:
    """The OpenAI chat.completion body."""
    choices = []
    for index, choice in enumerate(completion.choices):
        entry: dict[str, Any] = {
            "index": index,
            "message": {"role": "assistant", "content": choice.text},
            "finish_reason": choice.finish_reason,
            "logprobs": None,
        }
        if logprobs:
            entry["logprobs"] = {
                "content": [
                    {
                        "token": t.text,
                        "logprob": t.logprob,
                        "bytes": list(t.raw),
                        "top_logprobs": [
                            {"token": text, "logprob": lp, "bytes": list(raw)}
                            for text, raw, lp in t.top
                        ],
                    }
                    for t in choice.tokens
                ],
                "refusal": None,
            }
        choices.append(entry)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "optfolio-serve-local",
        "choices": choices,
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": completion.cached_prompt_tokens},
        },
    }


def load(
    models: Sequence[str], *, threads: int | None = None, n_ctx: int | None = None
) -> ModelPool:
    engines = []
    for spec in models:
        name, path = resolve(spec)
        context = n_ctx or (KNOWN_MODELS[name].n_ctx if name in KNOWN_MODELS else 4096)
        engines.append(Engine(name, path, n_ctx=context, threads=threads))
    return ModelPool(engines)


def serve(
    models: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8088,
    threads: int | None = None,
    n_ctx: int | None = None,
    nice: int = SERVER_NICE,
    log_level: Literal["info", "warning"] = "info",
) -> None:
    """Load ``models`` (names or GGUF paths) and serve until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Before the model's threads exist, so they inherit it.
    priority = claim_cpu(nice)
    pool = load(models, threads=threads, n_ctx=n_ctx)
    pool.priority = priority.as_dict()
    log.info("serving %s on http://%s:%d/v1", ", ".join(pool.engines), host, port)
    uvicorn.run(create_app(pool), host=host, port=port, log_level=log_level, access_log=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m servers.local_model.server")
    parser.add_argument("--model", action="append", help="known name or GGUF path; repeatable")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-ctx", type=int, default=None)
    parser.add_argument("--nice", type=int, default=SERVER_NICE, help=NICE_HELP)
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the starting process dies"
    )
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        _exit_with_parent()
    threads = args.threads or int(os.environ.get("OPTFOLIO_LLM_THREADS", "0")) or None
    serve(
        args.model or ["qwen2.5-coder-1.5b"],
        host=args.host,
        port=args.port,
        threads=threads,
        n_ctx=args.n_ctx,
        nice=args.nice,
        log_level="warning",
    )


def _exit_with_parent() -> None:
    # A run killed without cleanup (SIGKILL, a timeout's SIGTERM) must not leave 2 GB of model
    # and both cores busy: when our parent goes away we are re-parented, and we leave too.
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


if __name__ == "__main__":
    main()
