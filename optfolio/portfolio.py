"""The method's mathematics, reference implementation (paper §2–3, Eq. 2, Def. 3.4).

The SQL in ``sql/`` computes the same things over whole datasets; this module is the
readable reference the property tests hold the SQL to. Conventions, pinned down here once:

* **Probabilities** are normalized over the candidate set of a problem, invalid candidates (⊥)
  included: ⊥ carries mass that no portfolio can collect.
* **Ranking**: valid candidates first, by evaluator score descending (a missing score ranks
  after every present one), ties broken by the md5 of ``f"{seed}:{candidate_id}"`` read as a
  little-endian 128-bit integer (DuckDB's ``md5_number``), ascending, so a run is
  reproducible and SQL and Python agree bit for bit. ⊥ ranks last under every evaluator.
* **Portfolio (Eq. 2)**: k*(α) = min{k ≥ 1 : Σ_{i≤k} p(o_(i)) ≥ 1 − α − MASS_TOLERANCE} over the
  valid prefix of the ranking. ⊥ never enters a portfolio: when the valid candidates' mass
  cannot reach 1 − α, the portfolio is every valid candidate and the target is not reached.
  The tolerance makes a cumulative sum of 0.9999999 count as reaching 1 − 0; it is far below
  any mass a user would trade. α = 1 gives the single best-ranked candidate.
* **Coverage (Def. 3.4)**: c(P) = |{o ∈ P : human_rank(o) ≤ |P|}| / |P|.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from optfolio.errors import InputError
from optfolio.evaluators import DEFAULT_EVALUATOR, Evaluator, evaluator_kind

MASS_TOLERANCE = 1e-6

ProbabilityMethod = Literal["length_normalized", "sequence", "frequency"]
PROBABILITY_METHODS: tuple[ProbabilityMethod, ...] = ("length_normalized", "sequence", "frequency")


@dataclass(frozen=True)
class Candidate:
    """What the portfolio math needs to know about one candidate."""

    candidate_id: str
    weight: float  # unnormalized generator probability (any positive scale)
    valid: bool = True
    scores: Sequence[float | None] = field(default_factory=tuple)  # evaluator samples
    human_rank: int | None = None


@dataclass(frozen=True)
class Portfolio:
    alpha: float
    members: tuple[str, ...]  # candidate ids, best-ranked first
    target_reached: bool

    @property
    def size(self) -> int:
        return len(self.members)


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise InputError(f"alpha={alpha!r} is outside [0, 1]")
    return float(alpha)


def normalize(weights: Sequence[float]) -> np.ndarray:
    """Weights → probabilities summing to 1 over the candidate set."""
    array = np.asarray(weights, dtype=float)
    if array.size == 0:
        return array
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise InputError("candidate weights must be finite and non-negative")
    total = array.sum()
    if total <= 0:
        raise InputError("candidate weights sum to zero: no probability to normalize")
    return array / total


def weights_from_logprobs(
    logprob_sum: Sequence[float | None],
    logprob_mean: Sequence[float | None],
    n_samples: Sequence[int],
    method: ProbabilityMethod = "length_normalized",
) -> np.ndarray:
    """Unnormalized p(o) per candidate of one problem, by the chosen method.

    When any candidate of the problem lacks log-probs (an endpoint that returns none), the
    whole problem falls back to the empirical frequency of equivalent candidates.
    """
    if method not in PROBABILITY_METHODS:
        raise InputError(f"probability method {method!r}: use one of {PROBABILITY_METHODS}")
    source = {"length_normalized": logprob_mean, "sequence": logprob_sum}.get(method)
    if source is None or any(value is None or not math.isfinite(value) for value in source):
        return np.asarray(n_samples, dtype=float)
    logs = np.asarray(source, dtype=float)
    return np.exp(logs - logs.max())  # shift by the max: exp(sum) of long texts underflows


def tie_break_key(seed: int, candidate_id: str) -> int:
    """The seeded, reproducible tie-breaker: DuckDB's ``md5_number`` of the same text."""
    return int.from_bytes(hashlib.md5(f"{seed}:{candidate_id}".encode()).digest(), "little")


def mean_score(scores: Sequence[float | None]) -> float | None:
    present = [s for s in scores if s is not None and math.isfinite(s)]
    return sum(present) / len(present) if present else None


def rank(
    candidates: Sequence[Candidate], evaluator_scores: Mapping[str, float | None], seed: int
) -> list[Candidate]:
    """Best first: valid before ⊥, higher score first, missing scores last, seeded ties."""

    def key(candidate: Candidate) -> tuple[bool, bool, float, int]:
        score = evaluator_scores.get(candidate.candidate_id)
        return (
            not candidate.valid,
            score is None,
            -(score if score is not None else 0.0),
            tie_break_key(seed, candidate.candidate_id),
        )

    return sorted(candidates, key=key)


def by_mean_score(candidates: Sequence[Candidate]) -> dict[str, float | None]:
    """Ranking source ``mean_score``: the mean of the LLM evaluator's sampled scores."""
    return {c.candidate_id: mean_score(c.scores) for c in candidates}


def by_p(candidates: Sequence[Candidate]) -> dict[str, float | None]:
    """Ranking source ``p``: the generator probability p(o) itself."""
    normalized = normalize([c.weight for c in candidates])
    return {c.candidate_id: float(p) for c, p in zip(candidates, normalized, strict=True)}


# Each ranking source an evaluator kind can rank by (``optfolio.evaluators``), as the score it
# gives each candidate; ``sql/rankings.sql`` computes the same sources.
RANKING_SOURCES: dict[str, Callable[[Sequence[Candidate]], Mapping[str, float | None]]] = {
    "mean_score": by_mean_score,
    "p": by_p,
}


def ranking_source(
    evaluator: str,
) -> Callable[[Sequence[Candidate]], Mapping[str, float | None]]:
    """What the registered evaluator kind ``evaluator`` ranks by; anything else is refused."""
    kind = evaluator_kind(evaluator)
    source = RANKING_SOURCES.get(kind.ranked_by)
    if source is None:
        raise InputError(f"evaluator {kind.name!r}: no ranking source {kind.ranked_by!r}")
    return source


def rank_by(evaluator: str, candidates: Sequence[Candidate], seed: int) -> list[Candidate]:
    """The ranking of the evaluator kind ``evaluator``: best first by its ranking source."""
    return rank(candidates, ranking_source(evaluator)(candidates), seed)


def rank_by_evaluator(candidates: Sequence[Candidate], seed: int) -> list[Candidate]:
    """The LLM evaluator's ranking: mean of its sampled scores (source ``mean_score``)."""
    return rank(candidates, by_mean_score(candidates), seed)


def portfolio_size(
    ranked_probabilities: Sequence[float], ranked_valid: Sequence[bool], alpha: float
) -> tuple[int, bool]:
    """k*(α) over a ranking (probabilities already normalized), and whether 1 − α was reached."""
    target = 1.0 - check_alpha(alpha) - MASS_TOLERANCE
    cumulative = 0.0
    size = 0
    for probability, valid in zip(ranked_probabilities, ranked_valid, strict=True):
        if not valid:
            break
        size += 1
        cumulative += probability
        if cumulative >= target:
            return size, True
    return size, False


def build_portfolio(
    ranked: Sequence[Candidate], probabilities: Mapping[str, float], alpha: float
) -> Portfolio:
    """Eq. 2: the k*(α) best-ranked candidates."""
    size, reached = portfolio_size(
        [probabilities[c.candidate_id] for c in ranked], [c.valid for c in ranked], alpha
    )
    return Portfolio(alpha, tuple(c.candidate_id for c in ranked[:size]), reached)


def portfolios(
    candidates: Sequence[Candidate],
    alphas: Sequence[float],
    seed: int,
    evaluator: Evaluator = DEFAULT_EVALUATOR,
) -> list[Portfolio]:
    """Portfolios of one problem on a grid of α, ranked by the evaluator kind ``evaluator``."""
    scores = ranking_source(evaluator)
    if not candidates:
        return [Portfolio(check_alpha(a), (), False) for a in alphas]
    probabilities = dict(
        zip(
            (c.candidate_id for c in candidates),
            normalize([c.weight for c in candidates]),
            strict=True,
        )
    )
    ranked = rank(candidates, scores(candidates), seed)
    return [build_portfolio(ranked, probabilities, alpha) for alpha in alphas]


def coverage(members: Sequence[str], human_rank: Mapping[str, int]) -> float | None:
    """Def. 3.4: share of the portfolio inside the human top-|P|; None for an empty one."""
    if not members:
        return None
    size = len(members)
    return sum(1 for m in members if human_rank[m] <= size) / size


def coverage_lower_bound(alpha: float, size: int) -> float:
    """Prop. 3.6: an aligned generator and α < 1/2 give c > (1 − 2α) / k*(α)."""
    return (1.0 - 2.0 * alpha) / size
