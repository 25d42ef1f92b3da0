"""The evaluator and the judge: an LLM reads a candidate and its execution and gives a score
from 1 to 100, sampled m times. The judge also sees the ground truth.

Rows conform to ``schemas.SCORES`` and ``schemas.JUDGMENTS``; a sample whose score is missing
or outside 1..100 keeps its raw text with a null score, so nothing is silently dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from optfolio.llm.client import LLMClient
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
    samples = client.sample(
        prompt, n=m, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=False
    )
    rows = [
        {
            "problem_id": candidate["problem_id"],
            "candidate_id": candidate["candidate_id"],
            "sample_index": i,
            "score": parse_score(s.text),
            "raw_text": s.text,
            "model": client.settings.model,
        }
        for i, s in enumerate(samples)
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
    samples = client.sample(
        prompt, n=m, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=False
    )
    rows = []
    for i, s in enumerate(samples):
        score = parse_score(s.text)
        rows.append(
            {
                "problem_id": candidate["problem_id"],
                "candidate_id": candidate["candidate_id"],
                "sample_index": i,
                "score": score,
                "normalized_score": normalized_score(score),
                "raw_text": s.text,
                "model": client.settings.model,
            }
        )
    return pa.Table.from_pylist(rows, schema=JUDGMENTS)


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
