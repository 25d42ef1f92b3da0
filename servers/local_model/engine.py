"""Sampling over llama.cpp's C API (:mod:`.llama_abi`), with log-probs at full decoding speed.

Why not a ready-made server: llama-cpp-python's sorts the whole vocabulary in Python per token
when asked for log-probs (~10× slower) and ignores ``n``; llama.cpp's own decodes a request's
samples as separate slots and its usage counts one choice. Here one decode step costs what
llama.cpp needs; everything per token beyond that is a few vectorized
numpy passes over the logits (log-softmax, temperature, top-p, inverse-CDF draw).

The prompt is decoded once per request into sequence 0 of one unified KV cache. The ``n``
samples are decoded side by side, one token of each per ``llama_decode`` call: each sample is
a sequence of its own that shares the prompt's cells (``llama_memory_seq_cp`` copies no data)
and starts from the prompt's saved logits. On a CPU, decoding is bound by reading the weights,
and a batch of k tokens reads them once, so k samples cost far less than k times one (measured
in ``bench/local_llm.py``). Sample i draws from its own generator seeded by (seed, i), so it
does not depend on how many others run beside it. Sequence 0 survives across requests, so a
prompt sharing a prefix with the previous one (the same system message and problem, say) only
decodes its new tail; that reuse is reported as ``cached_tokens``.

Log-probs reported are those of the model's own distribution (temperature 1, no top-p), which
is what the generator probability p(o) needs, whatever temperature the sample was drawn at.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2
import numpy as np
import numpy.typing as npt
from jinja2.sandbox import ImmutableSandboxedEnvironment

from servers.local_model import llama_abi

_TOP_P_CANDIDATES = 512  # exact top-p without a full sort whenever these hold the nucleus
MAX_PARALLEL = 8  # samples decoded side by side; sequence 0 holds the prompt
_CELLS_PER_CONTEXT = 2  # the unified KV cache holds this many full contexts
_BATCH = 512  # tokens per llama_decode call (prompt chunks; decode steps are ≤ MAX_PARALLEL)


class RequestError(ValueError):
    """The request cannot be served as asked (too long a prompt, bad parameter)."""


class Abandoned(Exception):
    """The request's client went away: decoding stopped after ``decoded`` new tokens."""

    def __init__(self, decoded: int) -> None:
        super().__init__(f"abandoned after {decoded} decoded token(s)")
        self.decoded = decoded


def _never() -> bool:
    return False


def _raise_template_error(message: str) -> None:
    raise RequestError(f"the model's chat template refused the messages: {message}")


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
    # Decode steps by how many samples each advanced: a sample that stops early leaves its
    # wave's last steps narrower, and a narrow step costs nearly what a wide one does.
    steps_by_width: dict[int, int] = field(default_factory=dict)

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
        self.name = name
        self.path = path
        self._lib = lib = llama_abi.load()
        n_threads = threads or max(os.cpu_count() or 1, 1)
        self._model = lib.llama_model_load_from_file(
            str(path).encode(), lib.llama_model_default_params()
        )
        if not self._model:
            raise RequestError(f"model {name}: llama.cpp could not load {path}")
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx * _CELLS_PER_CONTEXT
        params.n_batch = params.n_ubatch = _BATCH
        params.n_seq_max = MAX_PARALLEL + 1
        params.kv_unified = True  # one cell pool: samples share the prompt's cells
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise RequestError(f"model {name}: llama.cpp could not make a context")
        self._check_context(params)
        self._memory = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(_BATCH, 0, 1)
        self.n_ctx = n_ctx  # what one sample (prompt + completion) may use
        self._cells = lib.llama_n_ctx(self._ctx)
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._lock = threading.Lock()
        self.decode_calls = 0  # llama_decode calls so far: how a server shows it is working
        self.decoding = 0  # completion tokens of the request in progress, so far
        self._kv_tokens: list[int] = []  # what the KV cache holds for sequence 0, in order
        self._pieces: dict[int, bytes] = {}
        self._prompt_logits: tuple[list[int], npt.NDArray[np.float32]] | None = None
        self._template = self._chat_template()

    def _check_context(self, asked: llama_abi.ContextParams) -> None:
        """Reads back what the context got: a struct member declared at the wrong offset
        would show here, not as corrupt samples later."""
        lib, ctx = self._lib, self._ctx
        got = {
            "n_ctx": lib.llama_n_ctx(ctx),
            "n_batch": lib.llama_n_batch(ctx),
            "n_ubatch": lib.llama_n_ubatch(ctx),
            "n_seq_max": lib.llama_n_seq_max(ctx),
            "n_threads": lib.llama_n_threads(ctx),
            "n_threads_batch": lib.llama_n_threads_batch(ctx),
            # a unified cache gives every sequence the whole pool
            "kv_unified": lib.llama_n_ctx_seq(ctx) == lib.llama_n_ctx(ctx),
        }
        wanted = {key: getattr(asked, key) for key in got}
        if got != wanted:
            raise llama_abi.LayoutMismatch(f"llama.cpp context: asked {wanted}, got {got}")

    # ---- prompt --------------------------------------------------------------------------

    def _chat_template(self) -> jinja2.Template:
        key = b"tokenizer.chat_template"
        length = self._lib.llama_model_meta_val_str(self._model, key, None, 0)
        if length < 0:
            raise RequestError(f"model {self.name} has no chat template in its GGUF metadata")
        buffer = ctypes.create_string_buffer(length + 1)
        self._lib.llama_model_meta_val_str(self._model, key, buffer, length + 1)
        # As transformers and llama.cpp render chat templates: sandboxed, trimmed blocks.
        environment = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True
        )
        return environment.from_string(buffer.value.decode("utf-8"))

    def _token_text(self, token: int) -> str:
        if token == -1:
            return ""
        return (self._lib.llama_vocab_get_text(self._vocab, token) or b"").decode("utf-8")

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        bos = self._token_text(self._lib.llama_vocab_bos(self._vocab))
        prompt = self._template.render(
            messages=list(messages),
            bos_token=bos,
            eos_token=self._token_text(self._lib.llama_vocab_eos(self._vocab)),
            add_generation_prompt=True,
            raise_exception=_raise_template_error,
            strftime_now=lambda format: datetime.now().strftime(format),
        )
        add_bos = bool(self._lib.llama_vocab_get_add_bos(self._vocab)) and not (
            bos and prompt.startswith(bos)
        )
        return self.tokenize(prompt.encode("utf-8"), add_bos=add_bos)

    def tokenize(self, text: bytes, *, add_bos: bool) -> list[int]:
        """Tokens of ``text``, special tokens (``<|im_start|>``…) parsed as such."""
        size = len(text) + 2
        while True:
            tokens = (llama_abi.c_token * size)()
            count = self._lib.llama_tokenize(
                self._vocab, text, len(text), tokens, size, add_bos, True
            )
            if count >= 0:
                return list(tokens[:count])
            size = -count  # too small: llama.cpp says how many it needs

    def check_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt's tokens; :class:`RequestError` when the template refuses the messages
        or the prompt leaves no room in the context. Safe beside a decoding request."""
        prompt = self.prompt_tokens(messages)
        if len(prompt) >= self.n_ctx:
            raise RequestError(f"prompt has {len(prompt)} tokens; the context holds {self.n_ctx}")
        return prompt

    # ---- generation ----------------------------------------------------------------------

    def complete(
        self,
        prompt: list[int],
        params: SamplingParams,
        *,
        abandoned: Callable[[], bool] = _never,
    ) -> Completion:
        """The ``n`` samples for a prompt from :meth:`check_prompt`; raises :class:`Abandoned`
        as soon as ``abandoned()`` says the client has gone (checked before the prompt and after
        every token), so no core decodes an answer nobody will read."""
        max_tokens = min(params.max_tokens, self.n_ctx - len(prompt))
        with self._lock:
            self.decoding = 0
            if abandoned():
                raise Abandoned(0)
            reused, prompt_logits = self._decode_prompt(prompt)
            steps_by_width: dict[int, int] = {}
            try:
                choices = self._sample_parallel(
                    len(prompt), prompt_logits, params, max_tokens, abandoned, steps_by_width
                )
            finally:
                for sequence in range(1, MAX_PARALLEL + 1):
                    self._drop_sequence(sequence)
        return Completion(
            choices,
            prompt_tokens=len(prompt),
            cached_prompt_tokens=reused,
            steps_by_width=dict(sorted(steps_by_width.items())),
        )

    def parallel_width(self, prompt_length: int, max_tokens: int, n: int) -> int:
        """How many samples decode side by side: as many as asked, up to MAX_PARALLEL, while
        every one of them may still reach ``max_tokens`` in the cell pool."""
        room = (self._cells - prompt_length) // max(max_tokens, 1)
        return max(1, min(n, MAX_PARALLEL, room))

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
        self._lib.llama_memory_seq_rm(self._memory, 0, keep, -1)
        del self._kv_tokens[keep:]

    def _drop_sequence(self, sequence: int) -> None:
        self._lib.llama_memory_seq_rm(self._memory, sequence, -1, -1)

    def _decode(self, tokens: Sequence[int]) -> npt.NDArray[np.float32]:
        """Appends ``tokens`` to the prompt sequence 0; the last one's logits."""
        for start in range(0, len(tokens), _BATCH):
            chunk = tokens[start : start + _BATCH]
            first = len(self._kv_tokens)
            self._run_batch(
                [(0, token, first + i, i == len(chunk) - 1) for i, token in enumerate(chunk)]
            )
            self._kv_tokens.extend(chunk)
        return self._logits_row(-1)

    def _decode_step(self, step: Sequence[tuple[int, int, int]]) -> list[npt.NDArray[np.float32]]:
        """One token for each of several sequences, as (sequence, token, position), in one
        ``llama_decode``; their logits in the same order."""
        self._run_batch([(sequence, token, position, True) for sequence, token, position in step])
        return [self._logits_row(row) for row in range(len(step))]

    def _run_batch(self, rows: Sequence[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (sequence, token, position, wants logits) rows."""
        batch = self._batch
        for row, (sequence, token, position, output) in enumerate(rows):
            batch.token[row] = token
            batch.pos[row] = position
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = sequence
            batch.logits[row] = output
        batch.n_tokens = len(rows)
        status = self._lib.llama_decode(self._ctx, batch)
        self.decode_calls += 1
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} for a batch of {len(rows)}")

    def _logits_row(self, row: int) -> npt.NDArray[np.float32]:
        pointer = self._lib.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _sample_parallel(
        self,
        prompt_length: int,
        prompt_logits: npt.NDArray[np.float32],
        params: SamplingParams,
        max_tokens: int,
        abandoned: Callable[[], bool],
        steps_by_width: dict[int, int],
    ) -> list[Choice]:
        width = self.parallel_width(prompt_length, max_tokens, params.n)
        choices: list[Choice] = []
        decoded = 0
        # Waves of ``width`` samples. A finished sample keeps its cells until its whole wave
        # is done: freeing cells while other sequences still decode corrupts their attention
        # in this llama.cpp (measured: logits off by 0.66 at the next step, then diverging).
        for first in range(0, params.n, width):
            indices = range(first, min(first + width, params.n))
            running: dict[int, _Sample] = {}
            for sequence, index in enumerate(indices, start=1):
                self._lib.llama_memory_seq_cp(self._memory, 0, sequence, 0, prompt_length)
                running[sequence] = _Sample(index, _sample_rng(params.seed, index), prompt_logits)
            wave = list(running.values())
            while running:
                step: list[tuple[int, int, int]] = []
                for sequence, sample in list(running.items()):
                    token = self._advance(sample, params, max_tokens)
                    if token is None:
                        del running[sequence]
                    else:
                        decoded += 1
                        self.decoding = decoded
                        step.append((sequence, token, prompt_length + len(sample.tokens) - 1))
                if abandoned():
                    raise Abandoned(decoded)
                if step:
                    steps_by_width[len(step)] = steps_by_width.get(len(step), 0) + 1
                    for (sequence, _, _), logits in zip(step, self._decode_step(step), strict=True):
                        running[sequence].logits = logits
            choices += [sample.choice() for sample in wave]
            for sequence in range(1, len(wave) + 1):
                self._drop_sequence(sequence)
        return choices

    def _advance(self, sample: _Sample, params: SamplingParams, max_tokens: int) -> int | None:
        """Draws the sample's next token; the token to decode, or None when it is finished."""
        logprobs = _log_softmax(sample.logits)
        token = _draw(sample.logits, logprobs, params.temperature, params.top_p, sample.rng)
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            sample.finish = "stop"
            return None
        raw = self._piece(token)
        top = self._top(logprobs, params.top_logprobs) if params.top_logprobs else ()
        sample.tokens.append(TokenInfo(sample.decoder.feed(raw), raw, float(logprobs[token]), top))
        if params.stop:
            cut = _find_stop(sample.tokens, params.stop)
            if cut is not None:
                sample.tokens = _cut_tokens(sample.tokens, cut)
                sample.finish = "stop"
                return None
        if len(sample.tokens) >= max_tokens:
            return None  # finish stays "length"
        return token

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            # The C call says the piece's length, or how much room it needs if more.
            size = 64
            while True:
                buffer = ctypes.create_string_buffer(size)
                length = self._lib.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
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
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
        self._lib.llama_model_free(self._model)


@dataclass
class _Sample:
    """One sample being decoded: where its next token is drawn from and what it has so far."""

    index: int
    rng: np.random.Generator
    logits: npt.NDArray[np.float32]
    tokens: list[TokenInfo] = field(default_factory=list)
    decoder: _Utf8Pieces = field(default_factory=lambda: _Utf8Pieces())
    finish: str = "length"

    def choice(self) -> Choice:
        tail = self.decoder.flush()
        if tail and self.tokens:
            last = self.tokens[-1]
            self.tokens[-1] = TokenInfo(last.text + tail, last.raw, last.logprob, last.top)
        return Choice("".join(t.text for t in self.tokens), self.finish, self.tokens)


def _sample_rng(seed: int | None, index: int) -> np.random.Generator:
    # Seeded by (seed, index): sample i is the same whatever n and however many run beside it.
    return np.random.default_rng(None if seed is None else [seed % 2**64, index])


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
