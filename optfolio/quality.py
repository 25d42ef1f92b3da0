"""Portfolio quality, reference implementation of ``sql/candidate_outcomes.sql`` …
``sql/quality.sql`` for one problem (the SQL is tested against it).

* correct: |objective − truth| ≤ 1e-6 · max(|truth|, 1); ORLM's rule beside it: both rounded
  to integers (half away from zero, as DuckDB rounds), relative error ≤ 5%.
* A portfolio's quality is the minimum judge score of its members: the reviewer may pick any.
  A member without a parsed judge score makes that minimum unknown (None), not the minimum
  of the others: the member it hides might be the worst.
* Baselines: pass@1, pass@s (unbiased estimator over samples), majority vote over objectives,
  random s-subsets of distinct valid units, and the paper's "prompting multiple times": s of
  the N raw samples drawn at random (multiplicity counted; a ⊥ sample scores 0 and is never
  correct).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

CORRECT_REL_TOL = 1e-6
ORLM_REL_TOL = 0.05
MAJORITY_DECIMALS = 6


def round_half_away(value: float) -> float:
    return math.copysign(math.floor(abs(value) + 0.5), value)


def is_correct(
    objective: float | None,
    truth: float | None,
    valid: bool = True,
    rel_tol: float = CORRECT_REL_TOL,
) -> bool | None:
    if truth is None:
        return None
    if not valid or objective is None or not math.isfinite(objective):
        return False
    return abs(objective - truth) <= rel_tol * max(abs(truth), 1.0)


def is_correct_orlm(
    objective: float | None, truth: float | None, valid: bool = True, rel_tol: float = ORLM_REL_TOL
) -> bool | None:
    if truth is None:
        return None
    if not valid or objective is None or not math.isfinite(objective):
        return False
    rounded_truth, rounded = round_half_away(truth), round_half_away(objective)
    if rounded_truth == 0:
        return rounded == 0
    return abs(rounded - rounded_truth) <= rel_tol * abs(rounded_truth)


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """Unbiased pass@k: the chance that k of the samples, drawn without replacement, hold a
    correct one (Chen et al., 2021)."""
    if k > samples:
        raise ValueError(f"k={k} exceeds samples={samples}")
    if samples - correct < k:
        return 1.0
    return 1.0 - math.comb(samples - correct, k) / math.comb(samples, k)


def majority_objective(objectives: Sequence[tuple[float | None, int]], seed: int) -> float | None:
    """The objective (rounded) most samples agree on; ties broken by a seeded md5, as in SQL.
    ``objectives`` holds (objective, samples) for the valid candidates."""
    votes: Counter[float] = Counter()
    for objective, count in objectives:
        if objective is not None and math.isfinite(objective):
            votes[round(objective, MAJORITY_DECIMALS)] += count
    if not votes:
        return None

    def key(value: float) -> tuple[int, int]:
        # DuckDB prints a double's shortest round-trip text, as Python's repr does
        text = f"{seed}:{value!r}"
        return (-votes[value], int.from_bytes(hashlib.md5(text.encode()).digest(), "little"))

    return min(votes, key=key)


def draw_order_key(seed: int, draw: int, unit_id: str) -> int:
    digest = hashlib.md5(f"{seed}:{draw}:{unit_id}".encode()).digest()
    return int.from_bytes(digest, "little")


def sample_draw_key(seed: int, draw: int, candidate_id: str, copy: int) -> int:
    """Orders the raw samples in draw ``draw``: copy ``copy`` of a text sampled n times."""
    digest = hashlib.md5(f"{seed}:{draw}:{candidate_id}#{copy}".encode()).digest()
    return int.from_bytes(digest, "little")


INVALID_SAMPLE_JUDGE_SCORE = 0.0  # a ⊥ sample: nothing to run, the worst a judge can give


@dataclass(frozen=True)
class PrefixQuality:
    min_judge_score: float | None
    holds_correct: bool | None


def prefix_quality(
    judge_scores: Sequence[float | None], correct: Sequence[bool | None]
) -> PrefixQuality:
    """Quality of a portfolio (a ranking prefix): min judge score (unknown when a member has
    none), any member correct (unknown correctness ignored, as SQL's bool_or ignores nulls)."""
    known = [c for c in correct if c is not None]
    unknown_score = not judge_scores or any(s is None for s in judge_scores)
    return PrefixQuality(
        None if unknown_score else min(judge_scores),  # type: ignore[type-var]
        any(known) if known else None,
    )
