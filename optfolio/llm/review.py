"""The evaluator and the judge: an LLM reads a candidate and its execution and gives a score
from 1 to 100, sampled m times. The judge also sees the ground truth.

Rows conform to ``schemas.SCORES`` and ``schemas.JUDGMENTS``. A reply without a readable score
(missing or outside 1..100) is asked again once; a reply still unreadable keeps its raw text
with a null score, so nothing is silently dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from optfolio.llm.client import LLMClient, Messages, Sample
from optfolio.llm.parsing import normalized_score, parse_score
from optfolio.llm.prompts import messages
from optfolio.schemas import JUDGMENTS, SCORES

REVIEW_TEMPERATURE = 1.0  # m samples are averaged: they must be allowed to differ
_OUTPUT_CHARS = 2000  # the tail of stdout/stderr shown to the reviewer; the end holds results


def evaluate_candidate(
    client: LLMClient,
    description: str,
    candidate: Mapping[str, Any],
    execution: Mapping[str, Any] | None,
    *,
    m: int = 4,
    max_tokens: int = 256,
    temperature: float = REVIEW_TEMPERATURE,
    seed: int | None = None,
) -> pa.Table:
    """Score one candidate ``m`` times (SCORES rows). ``candidate`` is a CANDIDATES row,
    ``execution`` an EXECUTIONS row (None: not run)."""
    prompt = messages(
        "evaluator",
        problem=description.strip(),
        formulation=_or_none(candidate.get("formulation")),
        code=_or_none(candidate.get("code")),
        execution=format_execution(execution),
    )
    replies = ask_for_scores(
        client, prompt, m=m, max_tokens=max_tokens, temperature=temperature, seed=seed
    )
    rows = [
        {
            "problem_id": candidate["problem_id"],
            "candidate_id": candidate["candidate_id"],
            "sample_index": i,
            "score": reply.score,
            "raw_text": reply.text,
            "model": client.settings.model,
            "reasked": reply.reasked,
        }
        for i, reply in enumerate(replies)
    ]
    return pa.Table.from_pylist(rows, schema=SCORES)


def judge_candidate(
    client: LLMClient,
    problem: Mapping[str, Any],
    candidate: Mapping[str, Any],
    execution: Mapping[str, Any] | None,
    *,
    m: int = 1,
    max_tokens: int = 256,
    temperature: float = REVIEW_TEMPERATURE,
    seed: int | None = None,
) -> pa.Table:
    """Score one candidate against the ground truth ``m`` times (JUDGMENTS rows).
    ``problem`` is a PROBLEMS row (description, objective_truth, solution_truth)."""
    prompt = messages(
        "judge",
        problem=str(problem["description"]).strip(),
        objective_truth=_format_number(problem.get("objective_truth")),
        solution_truth=_format_solution(problem.get("solution_truth")),
        formulation=_or_none(candidate.get("formulation")),
        code=_or_none(candidate.get("code")),
        execution=format_execution(execution),
    )
    replies = ask_for_scores(
        client, prompt, m=m, max_tokens=max_tokens, temperature=temperature, seed=seed
    )
    rows = [
        {
            "problem_id": candidate["problem_id"],
            "candidate_id": candidate["candidate_id"],
            "sample_index": i,
            "score": reply.score,
            "normalized_score": normalized_score(reply.score),
            "raw_text": reply.text,
            "model": client.settings.model,
            "reasked": reply.reasked,
        }
        for i, reply in enumerate(replies)
    ]
    return pa.Table.from_pylist(rows, schema=JUDGMENTS)


@dataclass(frozen=True)
class Reply:
    """One review sample: its text, the score read from it (None: unreadable) and whether it
    came from the second ask."""

    text: str
    score: float | None
    reasked: bool = False


def ask_for_scores(
    client: LLMClient,
    prompt: Messages,
    *,
    m: int,
    max_tokens: int,
    temperature: float,
    seed: int | None,
) -> list[Reply]:
    """``m`` replies to ``prompt``, in sample order. The replies without a readable score are
    asked again once, together (one request with n = their number), and the new replies take
    their places; what is still unreadable stays so (asking until it parses could loop)."""

    def ask(n: int, seed: int | None) -> list[Sample]:
        return client.sample(
            prompt, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=False
        )

    replies = [Reply(s.text, parse_score(s.text)) for s in ask(m, seed)]
    unread = [i for i, reply in enumerate(replies) if reply.score is None]
    if unread:
        for i, s in zip(unread, ask(len(unread), reask_seed(seed, m)), strict=True):
            replies[i] = Reply(s.text, parse_score(s.text), reasked=True)
    return replies


def reask_seed(seed: int | None, m: int) -> int:
    """The second ask's seed: the first after the ``m`` the first ask used (seed … seed + m − 1),
    so it is a new request (a seeded endpoint would repeat the unreadable replies, and the
    response cache would serve them), yet the same one on every re-run and resume."""
    return (seed or 0) + m


def format_execution(execution: Mapping[str, Any] | None) -> str:
    """What the reviewer sees of a run: status, parsed result, and the ends of the output."""
    if execution is None:
        return "(not executed)"
    lines = [f"status: {execution.get('status')}"]
    if execution.get("exit_code") is not None:
        lines.append(f"exit code: {execution['exit_code']}")
    lines.append(f"solver status: {execution.get('solver_status') or '(none reported)'}")
    lines.append(f"objective: {_format_number(execution.get('objective'))}")
    for stream in ("stdout", "stderr"):
        text = (execution.get(stream) or "").strip()
        if text:
            if len(text) > _OUTPUT_CHARS:
                text = "…" + text[-_OUTPUT_CHARS:]
            lines.append(f"{stream}:\n{text}")
    return "\n".join(lines)


def _or_none(value: Any) -> str:
    return str(value).strip() if value else "(none)"


def _format_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(unknown)"
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)


def _format_solution(value: Any) -> str:
    if not value:
        return "(not given)"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, Mapping):
        return "; ".join(f"{k} = {v}" for k, v in value.items())
    return json.dumps(value)
