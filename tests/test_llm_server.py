"""The real local server (``serve-local``) through the official ``openai`` client."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import urllib.parse
import urllib.request

import openai
import pytest

from optfolio.llm.client import LLMClient, LLMRequestError
from optfolio.llm.settings import LOCAL_API_KEY, LLMSettings
from servers.local_model.endpoint import server_health
from servers.local_model.priority import SERVER_NICE
from tests.plugins.llm_fixtures import QWEN, SMOL

pytestmark = pytest.mark.llm

PROMPT = [{"role": "user", "content": "Write a short sentence about linear programming."}]


@pytest.fixture
def raw(llm_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm_server, api_key=LOCAL_API_KEY, max_retries=0)


def test_health_and_models(llm_server: str, raw: openai.OpenAI) -> None:
    root = llm_server.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/health", timeout=5) as response:
        assert response.status == 200
    assert {m.id for m in raw.models.list().data} == {QWEN, SMOL}
    # The run's server leads its own session, so its whole CPU group is raised (needs root).
    priority = server_health(llm_server)["priority"]
    assert priority["requested"] == SERVER_NICE
    if os.geteuid() == 0:
        assert priority["nice"] == SERVER_NICE
        assert priority["session_nice"] in (SERVER_NICE, None)  # None: no autogroup here


def test_tokens_join_to_content_and_carry_logprobs(raw: openai.OpenAI) -> None:
    response = raw.chat.completions.create(
        model=SMOL, messages=PROMPT, max_tokens=24, logprobs=True, top_logprobs=3, seed=5
    )
    [choice] = response.choices
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert len(entries) == response.usage.completion_tokens
    for e in entries:
        assert math.isfinite(e.logprob) and e.logprob <= 0.0
        assert len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert e.logprob <= tops[0] + 1e-9  # nothing beats the most likely token
    assert response.usage.prompt_tokens > 0
    assert choice.finish_reason in {"stop", "length"}
    if choice.finish_reason == "length":
        assert len(entries) == 24


def test_n_is_honoured(raw: openai.OpenAI) -> None:
    response = raw.chat.completions.create(
        model=SMOL, messages=PROMPT, max_tokens=12, n=3, logprobs=True, seed=1
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert response.usage.completion_tokens == sum(
        len(c.logprobs.content) for c in response.choices
    )
    assert len({c.message.content for c in response.choices}) > 1  # samples, not copies


def test_seed_reproduces(raw: openai.OpenAI) -> None:
    def texts(seed: int) -> list[str | None]:
        response = raw.chat.completions.create(
            model=SMOL, messages=PROMPT, max_tokens=16, n=2, seed=seed, temperature=1.0
        )
        return [c.message.content for c in response.choices]

    first = texts(42)
    assert texts(42) == first
    assert texts(43) != first


def test_sample_i_is_the_same_whatever_n_and_the_batch_beside_it(raw: openai.OpenAI) -> None:
    """Samples decode side by side in one batch (in waves of at most 8): sample i of a seeded
    request must not depend on n, on the samples decoded beside it or on when they stop."""

    def samples(n: int) -> list[tuple[str | None, list[float]]]:
        response = raw.chat.completions.create(
            model=SMOL, messages=PROMPT, max_tokens=24, n=n, seed=9, logprobs=True
        )
        return [
            (c.message.content, [t.logprob for t in c.logprobs.content]) for c in response.choices
        ]

    three, ten = samples(3), samples(10)  # ten: a wave of 8, then one of 2
    assert samples(1) == three[:1]
    assert ten[:3] == three
    assert len({text for text, _ in ten}) > 5  # distinct samples, not copies
    assert len({len(lp) for _, lp in ten}) > 1  # they stopped at different lengths


def test_health_counts_decode_steps_by_how_many_samples_each_advanced(
    llm_server: str, raw: openai.OpenAI
) -> None:
    """Ten samples decode in a wave of 8 then one of 2; a wave narrows as its samples stop.
    The server's record says how wide each step was, so a benchmark can price the steps."""
    first_id = max((r["id"] for r in server_health(llm_server)["recent"]), default=0)
    response = raw.chat.completions.create(
        model=SMOL, messages=PROMPT, max_tokens=24, n=10, seed=9, logprobs=True
    )
    # A sample's last token is decoded only if it did not end the sample at max_tokens.
    decoded = [len(c.logprobs.content) - (c.finish_reason == "length") for c in response.choices]
    expected: dict[int, int] = {}
    for wave in (decoded[:8], decoded[8:]):
        for step in range(max(wave)):
            width = sum(length > step for length in wave)
            expected[width] = expected.get(width, 0) + 1
    [record] = [r for r in server_health(llm_server)["recent"] if r["id"] > first_id]
    assert {int(w): steps for w, steps in record["steps_by_width"].items()} == expected
    assert 8 in expected and len(expected) > 2  # full-width steps and narrower tails


def test_stop_sequences_and_greedy(raw: openai.OpenAI) -> None:
    counting = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    greedy = raw.chat.completions.create(
        model=SMOL, messages=counting, max_tokens=40, temperature=0.0, logprobs=True
    )
    text = greedy.choices[0].message.content or ""
    assert len(text) > 3
    stop = text[len(text) // 2 : len(text) // 2 + 2]  # something greedy decoding will write
    cut = raw.chat.completions.create(
        model=SMOL, messages=counting, max_tokens=40, temperature=0.0, stop=[stop], logprobs=True
    )
    choice = cut.choices[0]
    assert choice.finish_reason == "stop"
    assert stop not in (choice.message.content or "")
    assert text.startswith(choice.message.content or "")
    assert "".join(e.token for e in choice.logprobs.content) == choice.message.content


def test_client_errors_are_openai_shaped(raw: openai.OpenAI, llm_server: str) -> None:
    with pytest.raises(openai.NotFoundError):
        raw.chat.completions.create(model="no-such-model", messages=PROMPT, max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        raw.chat.completions.create(model=SMOL, messages=PROMPT, max_tokens=4, n=0)
    client = LLMClient(LLMSettings(model="no-such-model", base_url=llm_server))
    with client, pytest.raises(LLMRequestError, match="404"):
        client.sample(PROMPT, max_tokens=4)


def test_client_over_real_server_counts_usage_and_reuses_prompt(smol_settings: LLMSettings) -> None:
    with LLMClient(smol_settings) as client:
        samples = client.sample(PROMPT, n=2, max_tokens=8, seed=3)
        samples += client.sample(PROMPT, n=1, max_tokens=8, seed=4)
        usage = client.usage.snapshot()
    assert len(samples) == 3 and all(s.token_logprobs for s in samples)
    assert usage["requests"] == 2 and usage["samples"] == 3
    assert usage["completion_tokens"] == sum(s.token_count or 0 for s in samples)
    assert usage["cached_tokens"] > 0  # the second request found its prompt in the KV cache


def test_a_request_whose_client_has_gone_stops_decoding(
    llm_server: str, raw: openai.OpenAI
) -> None:
    """A killed client, or one past its own deadline, frees the server at once: the request
    decoding stops within a token or so, one queued behind it never starts, and the next
    request is served as if neither had been sent (seeded output unchanged)."""
    probe = {"model": SMOL, "messages": PROMPT, "max_tokens": 16, "seed": 3}
    before_text = raw.chat.completions.create(**probe).choices[0].message.content
    first_id = max((r["id"] for r in server_health(llm_server)["recent"]), default=0)
    n, max_tokens = 8, 1000
    long_body = {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Count from 1 to 5000, one number per line."}],
        "n": n,
        "max_tokens": max_tokens,
        "seed": 1,
    }
    body = json.dumps(long_body).encode()
    address = urllib.parse.urlsplit(llm_server)

    def give_up_after(seconds: float) -> None:
        # A client that sends its request and goes away (killed, or its own deadline).
        with socket.create_connection((address.hostname, address.port)) as connection:
            connection.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: local\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(seconds)

    decoding = threading.Thread(target=give_up_after, args=(3.0,))
    decoding.start()
    while server_health(llm_server)["queued"] < 1:  # the first holds the model before the second
        pass
    queued = threading.Thread(target=give_up_after, args=(1.0,))
    queued.start()
    decoding.join()
    queued.join()
    while server_health(llm_server)["queued"] > 0:  # both are being wound up
        time.sleep(0.1)

    after_text = raw.chat.completions.create(**probe).choices[0].message.content
    assert after_text == before_text
    health = server_health(llm_server)
    records = [r for r in health["recent"] if r["id"] > first_id]
    assert [r["status"] for r in records] == ["abandoned", "abandoned", "completed"]
    long_request, queued_request, _ = records
    # Decoding stopped soon after its client left: far from the n × max_tokens asked for.
    assert 0 < long_request["decoded"] < n * max_tokens // 4
    assert queued_request["decoded"] == 0  # it never reached the model
    assert health["queued"] == 0


def test_a_client_queued_behind_long_work_is_kept_informed_not_timed_out(
    llm_server: str, raw: openai.OpenAI
) -> None:
    """While the server works, a waiting client receives progress bytes (spaces, which JSON
    ignores before the body), so a read timeout far shorter than the wait neither fires nor
    makes the client retry: the server serves each request once."""
    first_id = max((r["id"] for r in server_health(llm_server)["recent"]), default=0)
    long_request = {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Count from 1 to 5000, one number per line."}],
        "n": 8,
        "max_tokens": 400,
        "seed": 2,
    }
    answers: list[int] = []
    holder = threading.Thread(
        target=lambda: answers.append(len(raw.chat.completions.create(**long_request).choices))
    )
    holder.start()
    while server_health(llm_server)["queued"] < 1:
        pass
    impatient = openai.OpenAI(
        base_url=llm_server,
        api_key=raw.api_key,
        timeout=openai.Timeout(4.0, connect=5.0),  # > PROGRESS_AFTER_S + PROGRESS_EVERY_S
        max_retries=0,
    )
    started = time.perf_counter()
    reply = impatient.chat.completions.create(
        model=SMOL, messages=PROMPT, max_tokens=8, seed=5, logprobs=True
    )
    waited = time.perf_counter() - started
    holder.join()
    assert answers == [8]
    assert reply.choices[0].message.content and reply.choices[0].logprobs is not None
    assert waited > 2 * 4.0  # it did wait well past its read timeout
    records = [r for r in server_health(llm_server)["recent"] if r["id"] > first_id]
    assert [r["status"] for r in records] == ["completed", "completed"]
