"""The client's retry, back-off, fallback, cache and accounting, against a fault-injecting
HTTP endpoint (real HTTP through the real ``openai`` package; only the server is scripted)."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from optfolio.errors import ServiceUnavailable
from optfolio.llm.cache import ResponseCache, request_key
from optfolio.llm.client import LLMClient, LLMRequestError, retry_after_seconds
from optfolio.llm.generator import candidates_table
from optfolio.llm.settings import LLMSettings
from optfolio.schemas import CANDIDATES
from tests.plugins.llm_fixtures import Fault, FaultServer

MESSAGES = [{"role": "user", "content": "hi"}]


def client_for(
    server: FaultServer, sleeps: list[float], cache: ResponseCache | None = None, **settings: object
) -> LLMClient:
    base = {"model": "m", "max_retries": 4, "backoff_initial_s": 1.0, "backoff_max_s": 8.0}
    base.update(settings)
    return LLMClient(
        LLMSettings(base_url=server.base_url, **base),  # type: ignore[arg-type]
        cache=cache,
        sleep=sleeps.append,  # record the back-off instead of waiting it out
        rng=random.Random(0),
    )


def test_429_honours_retry_after(fault_server: FaultServer) -> None:
    fault_server.then(Fault(status=429, headers={"retry-after": "7"}, body=b'{"error": {}}'))
    sleeps: list[float] = []
    with client_for(fault_server, sleeps) as client:
        [sample] = client.sample(MESSAGES)
    assert sample.text == "answer 0 seed None"
    assert sleeps == [7.0]
    assert client.usage.requests == 2 and client.usage.retries == 1


def test_5xx_backs_off_exponentially_with_jitter(fault_server: FaultServer) -> None:
    fault_server.then(*(Fault(status=s, body=b"oops") for s in (500, 502, 503, 500)))
    sleeps: list[float] = []
    with client_for(fault_server, sleeps) as client:
        client.sample(MESSAGES)
    assert len(sleeps) == 4
    for attempt, delay in enumerate(sleeps):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling  # equal jitter: never zero, never above the cap
    assert sleeps[3] > sleeps[0]


def test_timeouts_are_retried(fault_server: FaultServer) -> None:
    fault_server.then(Fault(delay_s=1.5))  # stalls past the client's 0.3 s read timeout
    sleeps: list[float] = []
    with client_for(fault_server, sleeps, timeout_s=0.3) as client:
        [sample] = client.sample(MESSAGES)
    assert sample.text.startswith("answer 0")
    assert client.usage.retries == 1 and len(sleeps) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(body=b"<html>not json</html>", headers={"content-type": "application/json"}),
        Fault(body=b"<html>bad gateway page</html>", headers={"content-type": "text/html"}),
        Fault(
            body=b'{"object": "chat.completion", "choices": []}',
            headers={"content-type": "application/json"},
        ),
        Fault(
            body=b'{"choices": [{"index": 0, "message": {"role": "assistant"}}]}',
            headers={"content-type": "application/json"},
        ),
    ],
    ids=["invalid-json", "html", "no-choices", "no-content"],
)
def test_malformed_bodies_are_retried(fault_server: FaultServer, fault: Fault) -> None:
    fault_server.then(fault)
    sleeps: list[float] = []
    with client_for(fault_server, sleeps) as client:
        [sample] = client.sample(MESSAGES)
    assert sample.text.startswith("answer 0")
    assert client.usage.retries == 1


def test_gives_up_after_max_retries_with_one_line_error(fault_server: FaultServer) -> None:
    fault_server.default = Fault(status=503, body=b"down")
    sleeps: list[float] = []
    with (
        client_for(fault_server, sleeps, max_retries=2) as client,
        pytest.raises(ServiceUnavailable, match=r"gave up after 3 attempts; last: HTTP 503"),
    ):
        client.sample(MESSAGES)
    assert len(fault_server.requests) == 3


def test_client_errors_are_not_retried(fault_server: FaultServer) -> None:
    fault_server.then(
        Fault(
            status=400,
            body=b'{"error": {"message": "bad max_tokens"}}',
            headers={"content-type": "application/json"},
        )
    )
    sleeps: list[float] = []
    with client_for(fault_server, sleeps) as client, pytest.raises(LLMRequestError, match="400"):
        client.sample(MESSAGES)
    assert len(fault_server.requests) == 1 and sleeps == []


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # past
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_n_in_one_request_when_supported(fault_server: FaultServer) -> None:
    with client_for(fault_server, []) as client:
        samples = client.sample(MESSAGES, n=5, seed=11)
    assert len(samples) == 5 and len(fault_server.requests) == 1
    assert fault_server.requests[0]["n"] == 5


def test_endpoint_ignoring_n_falls_back_to_one_request_per_sample(
    fault_server: FaultServer,
) -> None:
    fault_server.default = Fault(choices=1)  # like llama_cpp.server: n silently ignored
    with client_for(fault_server, []) as client:
        samples = client.sample(MESSAGES, n=4, seed=100)
        assert len(samples) == 4
        # The first request asked for n=4 and got one; three single requests followed, each
        # with its own seed so the samples are not copies of each other.
        assert [r.get("n") for r in fault_server.requests] == [4, None, None, None]
        assert sorted(r["seed"] for r in fault_server.requests[1:]) == [101, 102, 103]
        client.sample([{"role": "user", "content": "again"}], n=2)
    assert [r.get("n") for r in fault_server.requests[4:]] == [None, None]  # learned


def test_cache_hits_make_no_request_and_hold_no_key(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    cache = ResponseCache.in_store(tmp_path)
    secret = "sk-test-SECRET-do-not-store"
    settings = {"api_key": None}
    first = LLMClient(
        LLMSettings.from_env(model="m", base_url=fault_server.base_url, api_key=secret),
        cache=cache,
    )
    with first:
        samples = first.sample(MESSAGES, n=3, seed=1, max_tokens=20)
    assert len(fault_server.requests) == 1
    assert secret not in repr(first) and secret not in repr(first.settings)
    # A new client (a re-run) asking for more samples pays only for the new ones.
    with client_for(fault_server, [], cache=cache, **settings) as again:
        more = again.sample(MESSAGES, n=5, seed=1, max_tokens=20)
    assert [s.text for s in more[:3]] == [s.text for s in samples]
    assert all(s.from_cache for s in more[:3]) and not any(s.from_cache for s in more[3:])
    assert len(fault_server.requests) == 2 and fault_server.requests[1]["n"] == 2
    assert again.usage.cache_hits == 3 and again.usage.requests == 1
    with client_for(fault_server, [], cache=cache) as third:
        third.sample(MESSAGES, n=5, seed=1, max_tokens=20)
    assert third.usage.requests == 0 and third.usage.cache_hits == 5
    assert len(fault_server.requests) == 2
    for path in cache.directory.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text()
    # Different parameters are a different request.
    assert request_key("m", MESSAGES, {"max_tokens": 20}, 0) != request_key(
        "m", MESSAGES, {"max_tokens": 21}, 0
    )


def test_concurrent_cache_writers_agree(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")
    barrier = threading.Barrier(8)

    def write(i: int) -> dict[str, object]:
        barrier.wait()
        return cache.put("ab" * 32, {"text": f"writer {i}"})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(8)))
    assert len({r["text"] for r in results}) == 1  # first writer wins, everyone sees it
    assert cache.get("ab" * 32) == results[0]
    assert len(cache) == 1
    assert not [p for p in cache.directory.rglob(".*") if p.is_file()]  # no temporaries left


def test_concurrency_limit_and_usage_accounting(fault_server: FaultServer) -> None:
    fault_server.default = Fault(delay_s=0.2)
    with client_for(fault_server, [], concurrency=2) as client:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda i: client.sample([{"role": "user", "content": str(i)}]), range(6)))
        usage = client.usage.snapshot()
    assert fault_server.max_in_flight <= 2
    assert usage["requests"] == 6 and usage["samples"] == 6
    assert usage["prompt_tokens"] == 60 and usage["completion_tokens"] == 24
    assert usage["cached_tokens"] == 36


def test_missing_logprobs_become_nulls(fault_server: FaultServer) -> None:
    fault_server.default = Fault(logprobs=False)
    with client_for(fault_server, []) as client:
        samples = client.sample(MESSAGES, n=2)
    assert all(s.token_logprobs is None for s in samples)
    table = candidates_table("p1", samples, model="m")
    assert table.schema == CANDIDATES
    assert table.column("logprob_sum").null_count == table.num_rows
    assert table.column("logprob_mean").null_count == table.num_rows


def test_no_endpoint_is_a_clear_error() -> None:
    with pytest.raises(ServiceUnavailable, match="OPENAI_BASE_URL"):
        LLMClient(LLMSettings(base_url=None))


def test_native_n_is_split_into_bounded_requests(fault_server: FaultServer) -> None:
    with client_for(fault_server, [], max_n_per_request=2) as client:
        samples = client.sample(MESSAGES, n=5)
    assert len(samples) == 5
    # The chunks go out concurrently: their order at the server is not fixed.
    assert sorted(r.get("n") or 1 for r in fault_server.requests) == [1, 2, 2]


def test_native_chunks_get_the_seed_of_their_first_sample(fault_server: FaultServer) -> None:
    # A seeded endpoint (vLLM, our local server) answers a repeated request with the same
    # samples: chunks sent with one seed would be duplicates of the first chunk.
    with client_for(fault_server, [], max_n_per_request=2) as client:
        client.sample(MESSAGES, n=5, seed=7)
    sent = sorted((r["seed"], r.get("n") or 1) for r in fault_server.requests)
    assert sent == [(7, 2), (9, 2), (11, 1)]


def test_native_chunks_are_sent_together(fault_server: FaultServer) -> None:
    # N samples in chunks cost one request's latency, not one per chunk (within concurrency).
    fault_server.default = Fault(delay_s=0.3)
    with client_for(fault_server, [], max_n_per_request=2, concurrency=4) as client:
        samples = client.sample(MESSAGES, n=6, seed=0)
    assert len(samples) == 6 and len(fault_server.requests) == 3
    assert fault_server.max_in_flight == 3


def test_chunks_an_endpoint_cut_short_are_completed_per_sample(fault_server: FaultServer) -> None:
    fault_server.default = Fault(choices=1)  # n ignored: each chunk brings its first sample
    with client_for(fault_server, [], max_n_per_request=2) as client:
        samples = client.sample(MESSAGES, n=5, seed=20)
    assert len(samples) == 5 and len(fault_server.requests) == 5  # nothing asked twice
    # Sample i always comes from seed 20 + i, whichever request brought it.
    assert [s.text for s in samples] == [f"answer 0 seed {20 + i}" for i in range(5)]


def test_request_slot_is_held_per_request_not_across_back_off(fault_server: FaultServer) -> None:
    # The tasks pass a Prefect global concurrency slot here; a plain semaphore stands in for
    # it: the hook alone must bound the endpoint's load, one slot per HTTP request.
    fault_server.default = Fault(delay_s=0.2)
    fault_server.then(Fault(status=503, body=b"busy"))
    shared = threading.BoundedSemaphore(1)
    holders: set[int] = set()  # threads holding the slot
    entered = 0

    @contextlib.contextmanager
    def request_slot() -> Iterator[None]:
        nonlocal entered
        with shared:
            entered += 1
            holders.add(threading.get_ident())
            try:
                yield
            finally:
                holders.discard(threading.get_ident())

    settings = LLMSettings(base_url=fault_server.base_url, model="m", concurrency=4)
    sleeping_holders: list[bool] = []  # per back-off: did the sleeping thread hold the slot?
    with (
        LLMClient(
            settings,
            sleep=lambda _s: sleeping_holders.append(threading.get_ident() in holders),
            request_slot=request_slot,
        ) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        list(pool.map(lambda i: client.sample([{"role": "user", "content": str(i)}]), range(4)))
    assert client.usage.requests == 5 and entered == 5  # 4 requests and one retry
    assert sleeping_holders == [False]  # the back-off waited without a slot
    assert fault_server.max_in_flight == 1  # 4 client threads, one shared slot
