"""Sampling over the ``llama_cpp`` low-level API, with log-probs at full decoding speed.

Why not ``Llama.create_chat_completion``: with ``logprobs`` it sorts the whole vocabulary in
Python per token (~10× slower, upstream llama-cpp-python#1983) and it ignores ``n``. Here one
decode step costs what llama.cpp needs; everything per token beyond that is a few vectorized
numpy passes over the logits (log-softmax, temperature, top-p, inverse-CDF draw).

The prompt is decoded once per request and its KV cache is kept: each of the ``n`` samples
truncates the cache back to the prompt and starts from the prompt's saved logits. The cache
also survives across requests, so a prompt sharing a prefix with the previous one (the same
system message and problem, say) only decodes its new tail; that reuse is reported as
``cached_tokens``.

Log-probs reported are those of the model's own distribution (temperature 1, no top-p), which
is what the generator probability p(o) needs, whatever temperature the sample was drawn at.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_TOP_P_CANDIDATES = 512  # exact top-p without a full sort whenever these hold the nucleus


class RequestError(ValueError):
    """The request cannot be served as asked (too long a prompt, bad parameter)."""


class Abandoned(Exception):
    """The request's client went away: decoding stopped after ``decoded`` new tokens."""

    def __init__(self, decoded: int) -> None:
        super().__init__(f"abandoned after {decoded} decoded token(s)")
        self.decoded = decoded


def _never() -> bool:
    return False


@dataclass(frozen=True)
class TokenInfo:
    text: str  # the part of the content this token contributed (tokens join to the content)
    raw: bytes  # the token's own bytes (a UTF-8 character may span tokens)
    logprob: float
    top: tuple[tuple[str, bytes, float], ...] = ()


@dataclass
class Choice:
    text: str
    finish_reason: str
    tokens: list[TokenInfo] = field(default_factory=list)


@dataclass
class Completion:
    choices: list[Choice]
    prompt_tokens: int
    cached_prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.tokens) for c in self.choices)


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0


class Engine:
    """One GGUF model, one context; requests are served one at a time (CPU-bound anyway)."""

    def __init__(
        self, name: str, path: Path, *, n_ctx: int = 4096, threads: int | None = None
    ) -> None:
        import llama_cpp

        self.name = name
        self.path = path
        self._llama_cpp = llama_cpp
        n_threads = threads or max(os.cpu_count() or 1, 1)
        self._llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=512,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=False,
            verbose=False,
        )
        self.n_ctx = self._llm.n_ctx()
        self.n_vocab = self._llm.n_vocab()
        self._vocab = self._llm._model.vocab
        self._lock = threading.Lock()
        self._kv_tokens: list[int] = []  # what the KV cache holds for sequence 0, in order
        self._pieces: dict[int, bytes] = {}
        self._prompt_logits: tuple[list[int], npt.NDArray[np.float32]] | None = None
        self._formatter = self._chat_formatter()

    # ---- prompt --------------------------------------------------------------------------

    def _chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise RequestError(f"model {self.name} has no chat template in its GGUF metadata")
        model = self._llm._model
        eos, bos = model.token_eos(), model.token_bos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
        )

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        prompt = self._formatter(messages=list(messages)).prompt
        model = self._llm._model
        bos = model.token_bos()
        add_bos = bool(model.add_bos_token()) and not prompt.startswith(
            model.token_get_text(bos) if bos != -1 else "\0"
        )
        return list(self._llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))

    # ---- generation ----------------------------------------------------------------------

    def complete(
        self,
        messages: Sequence[dict[str, str]],
        params: SamplingParams,
        *,
        abandoned: Callable[[], bool] = _never,
    ) -> Completion:
        """The ``n`` samples; raises :class:`Abandoned` as soon as ``abandoned()`` says the
        client has gone (checked before the prompt and after every token), so no core decodes
        an answer nobody will read."""
        prompt = self.prompt_tokens(messages)
        if len(prompt) >= self.n_ctx:
            raise RequestError(f"prompt has {len(prompt)} tokens; the context holds {self.n_ctx}")
        max_tokens = min(params.max_tokens, self.n_ctx - len(prompt))
        rng = np.random.default_rng(params.seed)
        with self._lock:
            if abandoned():
                raise Abandoned(0)
            reused, prompt_logits = self._decode_prompt(prompt)
            choices: list[Choice] = []
            for _ in range(params.n):
                decoded = sum(len(c.tokens) for c in choices)
                choices.append(
                    self._sample_one(
                        prompt, prompt_logits, params, max_tokens, rng, abandoned, decoded
                    )
                )
        return Completion(choices, prompt_tokens=len(prompt), cached_prompt_tokens=reused)

    def _decode_prompt(self, prompt: list[int]) -> tuple[int, npt.NDArray[np.float32]]:
        if self._prompt_logits is not None and self._prompt_logits[0] == prompt:
            # The same prompt again: its KV entries are still there and its logits saved, so a
            # seeded request reproduces exactly (re-decoding one token alone gives logits that
            # differ in the last bits from decoding it inside the prompt's batch).
            self._truncate(len(prompt))
            return len(prompt), self._prompt_logits[1]
        common = 0
        for a, b in zip(self._kv_tokens, prompt, strict=False):
            if a != b:
                break
            common += 1
        # The last prompt token is always decoded again: we need its logits.
        common = min(common, len(prompt) - 1)
        self._truncate(common)
        logits = self._decode(prompt[common:])
        self._prompt_logits = (list(prompt), logits)
        return common, logits

    def _truncate(self, keep: int) -> None:
        self._llm._ctx.kv_cache_seq_rm(0, keep, -1)
        del self._kv_tokens[keep:]

    def _decode(self, tokens: Sequence[int]) -> npt.NDArray[np.float32]:
        batch = self._llm._batch
        step = self._llm.n_batch
        for start in range(0, len(tokens), step):
            chunk = tokens[start : start + step]
            batch.set_batch(batch=chunk, n_past=len(self._kv_tokens), logits_all=False)
            self._llm._ctx.decode(batch)
            self._kv_tokens.extend(chunk)
        # Only the chunk's last position asked for logits: output row 0.
        pointer = self._llm._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        ).copy()

    def _sample_one(
        self,
        prompt: list[int],
        prompt_logits: npt.NDArray[np.float32],
        params: SamplingParams,
        max_tokens: int,
        rng: np.random.Generator,
        abandoned: Callable[[], bool] = _never,
        decoded_before: int = 0,
    ) -> Choice:
        self._truncate(len(prompt))
        logits = prompt_logits
        decoder = _Utf8Pieces()
        tokens: list[TokenInfo] = []
        finish = "length"
        for position in range(max_tokens):
            logprobs = _log_softmax(logits)
            token = _draw(logits, logprobs, params.temperature, params.top_p, rng)
            if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                finish = "stop"
                break
            raw = self._piece(token)
            top = self._top(logprobs, params.top_logprobs) if params.top_logprobs else ()
            tokens.append(TokenInfo(decoder.feed(raw), raw, float(logprobs[token]), top))
            if params.stop:
                cut = _find_stop(tokens, params.stop)
                if cut is not None:
                    tokens = _cut_tokens(tokens, cut)
                    finish = "stop"
                    break
            if abandoned():
                raise Abandoned(decoded_before + len(tokens))
            if position + 1 < max_tokens:
                logits = self._decode([token])
        tail = decoder.flush()
        if tail and tokens:
            last = tokens[-1]
            tokens[-1] = TokenInfo(last.text + tail, last.raw, last.logprob, last.top)
        return Choice("".join(t.text for t in tokens), finish, tokens)

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            # llama_cpp's wrapper returns its whole 32-byte buffer, NULs included: use the
            # C call's length, growing the buffer for long pieces.
            size = 64
            while True:
                buffer = ctypes.create_string_buffer(size)
                length = self._llama_cpp.llama_token_to_piece(
                    self._vocab, token, buffer, size, 0, False
                )
                if length <= size:
                    break
                size = length
            piece = buffer.raw[: max(length, 0)]
            self._pieces[token] = piece
        return piece

    def _top(
        self, logprobs: npt.NDArray[np.float64], k: int
    ) -> tuple[tuple[str, bytes, float], ...]:
        k = min(k, self.n_vocab)
        best = np.argpartition(logprobs, -k)[-k:]
        best = best[np.argsort(-logprobs[best])]
        out = []
        for t in best:
            raw = self._piece(int(t))
            out.append((raw.decode("utf-8", errors="replace"), raw, float(logprobs[t])))
        return tuple(out)

    def close(self) -> None:
        self._llm.close()


# ---- numpy sampling ------------------------------------------------------------------------


def _log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    shifted = logits.astype(np.float64) - float(logits.max())
    return shifted - np.log(np.exp(shifted).sum())


def _draw(
    logits: npt.NDArray[np.float32],
    logprobs: npt.NDArray[np.float64],
    temperature: float,
    top_p: float,
    rng: np.random.Generator,
) -> int:
    if temperature <= 0.0:
        return int(np.argmax(logits))
    scaled = logprobs / temperature if temperature != 1.0 else logprobs
    if top_p < 1.0:
        return _draw_top_p(scaled, top_p, rng)
    probs = np.exp(scaled - scaled.max())
    cumulative = np.cumsum(probs)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))


def _draw_top_p(scaled: npt.NDArray[np.float64], top_p: float, rng: np.random.Generator) -> int:
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    k = min(_TOP_P_CANDIDATES, probs.size)
    # The k most likely tokens, exactly (argpartition), then a sort of only those; a full
    # sort only when they do not reach top_p.
    head = np.argpartition(probs, -k)[-k:]
    if probs[head].sum() < top_p:
        head = np.arange(probs.size)
    order = head[np.argsort(-probs[head], kind="stable")]
    cumulative = np.cumsum(probs[order])
    keep = int(np.searchsorted(cumulative, top_p, side="left")) + 1
    nucleus = order[:keep]
    weights = np.cumsum(probs[nucleus])
    return int(nucleus[np.searchsorted(weights, rng.random() * weights[-1], side="right")])


class _Utf8Pieces:
    """Turns token bytes into text pieces that join to the whole decoded content; a character
    split across tokens is attributed to the token that completes it."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, raw: bytes) -> str:
        data = self._pending + raw
        for cut in range(len(data), max(len(data) - 4, -1), -1):
            try:
                text = data[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self._pending = data[cut:]
            return text
        # Not UTF-8 at all: keep the text moving rather than buffer forever.
        self._pending = b""
        return data.decode("utf-8", errors="replace")

    def flush(self) -> str:
        data, self._pending = self._pending, b""
        return data.decode("utf-8", errors="replace")


def _find_stop(tokens: list[TokenInfo], stops: tuple[str, ...]) -> int | None:
    """Character index where the first stop string starts, if the text now contains one."""
    longest = max(len(s) for s in stops)
    tail_chars = 0
    start_token = len(tokens)
    # Only the last few tokens can complete a stop string that was not there before.
    while start_token > 0 and tail_chars < longest + len(tokens[start_token - 1].text):
        start_token -= 1
        tail_chars += len(tokens[start_token].text)
    offset = sum(len(t.text) for t in tokens[:start_token])
    window = "".join(t.text for t in tokens[start_token:])
    found = [i for s in stops if s and (i := window.find(s)) != -1]
    return offset + min(found) if found else None


def _cut_tokens(tokens: list[TokenInfo], cut: int) -> list[TokenInfo]:
    """Drop text from character ``cut`` on; a token straddling it keeps its part before."""
    kept: list[TokenInfo] = []
    position = 0
    for token in tokens:
        if position >= cut:
            break
        end = position + len(token.text)
        if end <= cut:
            kept.append(token)
        else:
            kept.append(
                TokenInfo(token.text[: cut - position], token.raw, token.logprob, token.top)
            )
        position = end
    return kept
