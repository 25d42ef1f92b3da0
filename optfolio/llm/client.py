"""The one way optfolio talks to a model: the official ``openai`` client, wrapped with our
retry policy, a concurrency limit, the response cache and per-run usage accounting.

A caller may add a wider limit through ``request_slot``: a context held around each HTTP
request (the tasks give it a Prefect global concurrency slot shared by every process).

We turn the SDK's own retries off (``max_retries=0``) so that every attempt is counted and the
back-off is ours: exponential with jitter, or exactly what ``Retry-After`` asks for.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import openai

from optfolio.errors import InputError, OptfolioError, ServiceUnavailable
from optfolio.llm.cache import ResponseCache, request_key
from optfolio.llm.settings import LOCAL_API_KEY, LLMSettings

log = logging.getLogger("optfolio.llm")

Messages = list[dict[str, str]]
RequestSlot = Callable[[], contextlib.AbstractContextManager[object]]
_RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
_MAX_N_PER_REQUEST = 128  # OpenAI's own limit on ``n``


class LLMRequestError(OptfolioError):
    """The endpoint refused a request in a way retrying cannot fix (400, 401, 404, ...)."""


class MalformedResponse(Exception):
    """A 200 answer we cannot read as a chat completion; retried like a server error."""


@dataclass(frozen=True)
class Sample:
    """One sampled answer. ``token_logprobs`` is None when the endpoint gave no log-probs."""

    text: str
    finish_reason: str | None
    tokens: tuple[str, ...] | None = None
    token_logprobs: tuple[float, ...] | None = None
    from_cache: bool = False

    @property
    def token_count(self) -> int | None:
        return None if self.token_logprobs is None else len(self.token_logprobs)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("from_cache")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        tokens = data.get("tokens")
        logprobs = data.get("token_logprobs")
        return cls(
            text=str(data.get("text", "")),
            finish_reason=data.get("finish_reason"),
            tokens=None if tokens is None else tuple(tokens),
            token_logprobs=None if logprobs is None else tuple(float(x) for x in logprobs),
            from_cache=True,
        )


@dataclass
class Usage:
    """What a run spent: counted per client, safe to update from many threads."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the endpoint reports as served from its cache
    cache_hits: int = 0  # samples served from our response cache (no request made)
    samples: int = 0  # samples received from the endpoint
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After`` seconds or date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class LLMClient:
    """Chat completions with n samples, cached per sample, retried, throttled and counted."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        cache: ResponseCache | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        request_slot: RequestSlot = contextlib.nullcontext,
    ) -> None:
        if settings.base_url is None:
            raise ServiceUnavailable(
                "no model endpoint configured: set OPENAI_BASE_URL or run inside"
                " servers.local_model.endpoint.local_endpoint()"
            )
        if settings.concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {settings.concurrency}")
        self.settings = settings
        self.cache = cache
        self.usage = Usage()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._request_slot = request_slot
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency)
        # auto mode learns from the first short answer that this endpoint ignores ``n``.
        self._native_n = settings.n_mode != "repeat"
        key = settings.api_key.reveal() if settings.api_key else LOCAL_API_KEY
        self._openai = openai.OpenAI(
            api_key=key,
            base_url=settings.base_url,
            timeout=openai.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            max_retries=0,
        )

    def __repr__(self) -> str:
        return f"LLMClient(model={self.settings.model!r}, base_url={self.settings.base_url!r})"

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._openai.close()

    # ---- sampling ------------------------------------------------------------------------

    def sample(
        self,
        messages: Messages,
        *,
        n: int = 1,
        temperature: float = 1.0,
        max_tokens: int = 1024,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
    ) -> list[Sample]:
        """``n`` samples of one prompt, in sample-index order; cached samples cost nothing."""
        if n < 1:
            raise InputError(f"n must be at least 1, got {n}")
        want_logprobs = self.settings.logprobs if logprobs is None else logprobs
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if top_p is not None:
            params["top_p"] = top_p
        if seed is not None:
            params["seed"] = seed
        if stop:
            params["stop"] = list(stop)
        if want_logprobs:
            params["logprobs"] = True
            if top_logprobs:
                params["top_logprobs"] = top_logprobs
        keys = [request_key(self.settings.model, messages, params, i) for i in range(n)]
        results: list[Sample | None] = [None] * n
        if self.cache is not None:
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is not None:
                    results[i] = Sample.from_json(hit)
            self.usage.add(cache_hits=sum(r is not None for r in results))
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            for i, got in zip(missing, self._fetch(messages, params, missing), strict=True):
                results[i] = self._store(keys[i], got)
        return [r for r in results if r is not None]

    def _store(self, key: str, got: Sample) -> Sample:
        if self.cache is None:
            return got
        stored = self.cache.put(key, got.to_json())
        # Another process may have answered first: use its sample so all agree.
        return got if stored == got.to_json() else Sample.from_json(stored)

    def _fetch(
        self, messages: Messages, params: dict[str, Any], indices: list[int]
    ) -> list[Sample]:
        """Samples for ``indices``, in that order."""
        got: dict[int, Sample] = {}
        if self._native_n:
            per_request = max(min(self.settings.max_n_per_request, _MAX_N_PER_REQUEST), 1)
            chunks = [indices[i : i + per_request] for i in range(0, len(indices), per_request)]

            # A seeded endpoint repeats a repeated request: each chunk gets the seed of its
            # first sample (as one request per sample would), else chunks are duplicates.
            def chunk(part: list[int]) -> list[Sample]:
                return self._request(messages, _seeded(params, part[0]), n=len(part))

            # Chunks go out together: N samples cost one request's latency, not one per chunk.
            answers = list(self._pool.map(chunk, chunks)) if len(chunks) > 1 else [chunk(chunks[0])]
            for part, answer in zip(chunks, answers, strict=True):
                got.update(zip(part, answer, strict=False))
            short = [
                (len(a), len(p)) for p, a in zip(chunks, answers, strict=True) if len(a) < len(p)
            ]
            if short:
                if self.settings.n_mode == "native":
                    raise LLMRequestError(
                        f"endpoint returned {short[0][0]} choices for n={short[0][1]}; set n_mode"
                        " to 'auto' or 'repeat' for endpoints that ignore n"
                    )
                log.info("endpoint ignores n (got %d of %d): one request per sample now", *short[0])
                self._native_n = False
        rest = [i for i in indices if i not in got]
        if rest:
            # One request per sample; a seed must differ per sample or all would be equal.
            def one(index: int) -> Sample:
                return self._request(messages, _seeded(params, index), n=1)[0]

            got.update(zip(rest, self._pool.map(one, rest), strict=True))
        return [got[i] for i in indices]

    # ---- one request, retried ------------------------------------------------------------

    def _request(self, messages: Messages, params: dict[str, Any], *, n: int) -> list[Sample]:
        attempt = 0
        while True:
            try:
                # Held per HTTP request, not across back-off sleeps: a waiting retry
                # takes no one's slot.
                with self._slots, self._request_slot():
                    self.usage.add(requests=1)
                    extra = {"n": n} if n > 1 else {}
                    response = self._openai.chat.completions.create(
                        model=self.settings.model,
                        messages=messages,
                        **params,
                        **extra,  # type: ignore[arg-type]
                    )
                samples = self._read(response)
            except openai.APIStatusError as error:
                if error.status_code not in _RETRY_STATUSES:
                    raise LLMRequestError(
                        f"{self.settings.base_url} refused the request: HTTP {error.status_code}:"
                        f" {_short(error.message)}"
                    ) from error
                wait = retry_after_seconds(error.response.headers)
                reason = f"HTTP {error.status_code}"
            except (
                openai.APIConnectionError,
                MalformedResponse,
                openai.APIResponseValidationError,
                json.JSONDecodeError,  # the SDK lets a non-JSON "application/json" body through
            ) as error:
                # APITimeoutError is an APIConnectionError; an unreadable body is the server's
                # fault like a 5xx, so it gets the same patience.
                wait = None
                reason = type(error).__name__ + (f": {_short(str(error))}" if str(error) else "")
            else:
                return samples
            if attempt >= self.settings.max_retries:
                raise ServiceUnavailable(
                    f"{self.settings.base_url}: gave up after {attempt + 1} attempts;"
                    f" last: {reason}"
                )
            delay = (
                self._backoff(attempt)
                if wait is None
                else min(wait, self.settings.backoff_max_s * 10)
            )
            attempt += 1
            self.usage.add(retries=1)
            log.warning("LLM request failed (%s); retry %d in %.2fs", reason, attempt, delay)
            self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": grows exponentially yet spreads clients that failed together.
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * 2**attempt)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _read(self, response: Any) -> list[Sample]:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse("no choices in the response body")
        samples = []
        for choice in sorted(choices, key=lambda c: getattr(c, "index", 0) or 0):
            message = getattr(choice, "message", None)
            content = getattr(message, "content", None)
            finish_reason = getattr(choice, "finish_reason", None)
            if finish_reason == "content_filter" and content is None:
                # The provider withheld the answer. Asking again (same prompt, same seed)
                # would be withheld again: record it as an answer, which the generator turns
                # into ⊥ and a review into a null score, so nothing retries forever.
                content = ""
            if not isinstance(content, str):
                raise MalformedResponse("a choice has no message content")
            tokens: tuple[str, ...] | None = None
            logprobs: tuple[float, ...] | None = None
            entries = getattr(getattr(choice, "logprobs", None), "content", None)
            if isinstance(entries, list) and entries:
                try:
                    tokens = tuple(str(e.token) for e in entries)
                    logprobs = tuple(float(e.logprob) for e in entries)
                except (AttributeError, TypeError, ValueError) as error:
                    raise MalformedResponse(f"unreadable log-probs: {error}") from error
            samples.append(
                Sample(
                    text=content,
                    finish_reason=finish_reason,
                    tokens=tokens,
                    token_logprobs=logprobs,
                )
            )
        usage = getattr(response, "usage", None)
        details = getattr(usage, "prompt_tokens_details", None)
        self.usage.add(
            samples=len(samples),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
        )
        return samples


def _seeded(params: dict[str, Any], index: int) -> dict[str, Any]:
    """Request parameters for samples starting at ``index``: the seed offset by it."""
    if "seed" not in params or index == 0:
        return params
    return params | {"seed": int(params["seed"]) + index}


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
