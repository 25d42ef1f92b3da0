"""The generator: N sampled candidate models per problem, as rows of ``schemas.CANDIDATES``.

Each sample's answer is split into formulation and code; samples whose normalized text is
equal merge into one candidate (``n_samples`` counts them, ``sample_indices`` lists them).
Answers with no usable code become the invalid candidate ⊥ (``valid`` False, with the
reason), so their probability mass is still counted downstream.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from optfolio.llm.client import LLMClient, Sample
from optfolio.llm.parsing import candidate_id, parse_candidate
from optfolio.llm.prompts import messages
from optfolio.schemas import CANDIDATES

GENERATOR_TEMPERATURE = 1.0  # the paper samples at temperature 1 so p(o) is the model's own


def generate_candidates(
    client: LLMClient,
    problem_id: str,
    description: str,
    *,
    n: int = 50,
    max_tokens: int = 1024,
    temperature: float = GENERATOR_TEMPERATURE,
    seed: int | None = None,
) -> pa.Table:
    """Sample ``n`` answers for one problem and return its candidates (CANDIDATES schema)."""
    prompt = messages("generator", problem=description.strip())
    samples = client.sample(prompt, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
    return candidates_table(problem_id, samples, model=client.settings.model)


def candidates_table(problem_id: str, samples: list[Sample], *, model: str) -> pa.Table:
    """Merge samples into candidates, first occurrence first."""
    rows: dict[str, dict[str, Any]] = {}
    for index, sample in enumerate(samples):
        cid = candidate_id(problem_id, sample.text)
        if cid in rows:
            rows[cid]["n_samples"] += 1
            rows[cid]["sample_indices"].append(index)
            continue
        parsed = parse_candidate(sample.text, sample.finish_reason)
        logprobs = sample.token_logprobs
        has_logprobs = bool(logprobs) and all(math.isfinite(x) for x in logprobs or ())
        total = math.fsum(logprobs) if has_logprobs and logprobs else None
        rows[cid] = {
            "problem_id": problem_id,
            "candidate_id": cid,
            "n_samples": 1,
            "sample_indices": [index],
            "text": sample.text,
            "formulation": parsed.formulation,
            "code": parsed.code,
            "solver": parsed.solver,
            "valid": parsed.valid,
            "invalid_reason": parsed.invalid_reason,
            "token_count": sample.token_count,
            "logprob_sum": total,
            "logprob_mean": None if total is None or not logprobs else total / len(logprobs),
            "finish_reason": sample.finish_reason,
            "model": model,
            "human_rank": None,
        }
    return pa.Table.from_pylist(list(rows.values()), schema=CANDIDATES)
