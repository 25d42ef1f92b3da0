"""The method's mathematics, reference implementation (paper §2–3, Eq. 2, Def. 3.4).

The SQL in ``sql/`` computes the same things over whole datasets; this module is the
readable reference the property tests hold the SQL to. Conventions, pinned down here once:

* **Probabilities** are normalized over the candidate set of a problem, invalid candidates (⊥)
  included: ⊥ carries mass that no portfolio can collect. A text sampled n times is n samples
  of the generator: its weight is n × its probability under the method (``frequency``: n).
* **Answers** (beyond the paper): valid candidates whose code ran ``ok`` with objectives equal
  under the correctness tolerance form one answer. Sorted by (objective, candidate id), a
  candidate joins the previous one's answer when |a − b| ≤ 1e-6·max(|a|, |b|, 1) (a chain:
  the tolerance is not transitive, and a chain is what SQL's ``lag`` computes). Any other
  candidate, ⊥ included, is an answer of its own. An answer's weight is its members' sum, its
  score samples are its members' samples, its id is ``answer-`` + its least candidate id;
  answers are ranked and cut by Eq. 2 exactly as candidates are.
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
from optfolio.quality import CORRECT_REL_TOL

MASS_TOLERANCE = 1e-6
ANSWER_REL_TOL = CORRECT_REL_TOL  # one answer: objectives a reviewer could not tell apart

ProbabilityMethod = Literal["length_normalized", "sequence", "frequency"]
PROBABILITY_METHODS: tuple[ProbabilityMethod, ...] = ("length_normalized", "sequence", "frequency")
Unit = Literal["candidate", "answer"]
UNITS: tuple[Unit, ...] = ("candidate", "answer")


@dataclass(frozen=True)
class Candidate:
    """What the portfolio math needs to know about one candidate."""

    candidate_id: str
    weight: float  # unnormalized generator probability (any positive scale)
    valid: bool = True
    scores: Sequence[float | None] = field(default_factory=tuple)  # evaluator samples
    human_rank: int | None = None
    objective: float | None = None  # the executed objective, when the code ran ok


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


def probability_method_used(
    logprob_sum: Sequence[float | None],
    logprob_mean: Sequence[float | None],
    method: ProbabilityMethod = "length_normalized",
) -> ProbabilityMethod:
    """The method a problem's p(o) is computed by: ``method``, unless some candidate lacks the
    log-probs it needs (an endpoint that returns none): then the empirical frequency."""
    if method not in PROBABILITY_METHODS:
        raise InputError(f"probability method {method!r}: use one of {PROBABILITY_METHODS}")
    source = {"length_normalized": logprob_mean, "sequence": logprob_sum}.get(method)
    if source is None or any(value is None or not math.isfinite(value) for value in source):
        return "frequency"
    return method


def weights_from_logprobs(
    logprob_sum: Sequence[float | None],
    logprob_mean: Sequence[float | None],
    n_samples: Sequence[int],
    method: ProbabilityMethod = "length_normalized",
) -> np.ndarray:
    """Unnormalized p(o) per candidate of one problem, by :func:`probability_method_used`.
    A text sampled n times weighs n × its probability: each sample is a draw of the generator."""
    used = probability_method_used(logprob_sum, logprob_mean, method)
    counts = np.asarray(n_samples, dtype=float)
    if used == "frequency":
        return counts
    logs = np.asarray(logprob_mean if used == "length_normalized" else logprob_sum, dtype=float)
    return counts * np.exp(logs - logs.max())  # shift by the max: exp(sum) of long texts underflows


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
    return dict(candidate_probabilities(candidates))


def candidate_probabilities(candidates: Sequence[Candidate]) -> dict[str, float]:
    """p(o) of each candidate: its weight normalized over the problem's candidate set."""
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


def units(
    candidates: Sequence[Candidate], unit: Unit = "candidate"
) -> tuple[list[Candidate], dict[str, float]]:
    """A problem's units to rank, and each one's p: the candidates themselves, or their
    answers (:func:`group_answers`) with p the members' p summed in candidate-id order (float
    sums depend on order; ``sql/unit_rankings.sql`` sums in the same one)."""
    if unit not in UNITS:
        raise InputError(f"unit {unit!r}: use one of {UNITS}")
    probabilities = candidate_probabilities(candidates)
    if unit == "candidate":
        return list(candidates), probabilities
    answers = group_answers(candidates)
    answer_probabilities = {
        a.answer_id: sum(probabilities[c] for c in sorted(m.candidate_id for m in a.members))
        for a in answers
    }
    return [a.as_unit() for a in answers], answer_probabilities


def portfolios(
    candidates: Sequence[Candidate],
    alphas: Sequence[float],
    seed: int,
    evaluator: Evaluator = DEFAULT_EVALUATOR,
    unit: Unit = "candidate",
) -> list[Portfolio]:
    """Portfolios of one problem on a grid of α, ranked by the evaluator kind ``evaluator``,
    of candidates or of answers (``unit``; members are then answer ids)."""
    ranking_source(evaluator)  # an unknown kind is refused even without candidates
    if not candidates:
        return [Portfolio(check_alpha(a), (), False) for a in alphas]
    problem_units, probabilities = units(candidates, unit)
    ranked = rank_units(problem_units, probabilities, seed, evaluator)
    return [build_portfolio(ranked, probabilities, alpha) for alpha in alphas]


def rank_units(
    problem_units: Sequence[Candidate],
    probabilities: Mapping[str, float],
    seed: int,
    evaluator: Evaluator = DEFAULT_EVALUATOR,
) -> list[Candidate]:
    """A problem's units (:func:`units`) best first under the evaluator kind ``evaluator``;
    the p source ranks by the units' own p (an answer's is its members' sum)."""
    source = ranking_source(evaluator)
    scores = probabilities if source is by_p else source(problem_units)
    return rank(problem_units, scores, seed)


@dataclass(frozen=True)
class Answer:
    """Candidates of one problem that compute the same objective (or one candidate alone)."""

    answer_id: str
    members: tuple[Candidate, ...]

    @property
    def objective(self) -> float | None:
        return self.members[0].objective  # the least in objective order

    def as_unit(self) -> Candidate:
        """The answer as a unit to rank and cut: summed weight, pooled score samples."""
        return Candidate(
            self.answer_id,
            sum(m.weight for m in self.members),
            all(m.valid for m in self.members),
            tuple(score for m in self.members for score in m.scores),
            objective=self.objective,
        )


def same_answer(a: float, b: float) -> bool:
    return abs(a - b) <= ANSWER_REL_TOL * max(abs(a), abs(b), 1.0)


def group_answers(candidates: Sequence[Candidate]) -> list[Answer]:
    """A problem's answers (module docstring), ordered by answer id."""

    def groupable(c: Candidate) -> bool:
        return c.valid and c.objective is not None and math.isfinite(c.objective)

    groups: list[list[Candidate]] = []
    previous: Candidate | None = None
    for candidate in sorted(
        (c for c in candidates if groupable(c)), key=lambda c: (c.objective, c.candidate_id)
    ):
        if previous is not None and same_answer(previous.objective, candidate.objective):  # type: ignore[arg-type]
            groups[-1].append(candidate)
        else:
            groups.append([candidate])
        previous = candidate
    groups += [[c] for c in candidates if not groupable(c)]
    answers = [
        Answer("answer-" + min(m.candidate_id for m in group), tuple(group)) for group in groups
    ]
    return sorted(answers, key=lambda a: a.answer_id)


def representative(answer: Answer, ranked_candidates: Sequence[Candidate]) -> str:
    """An answer's best-ranked member in a candidate ranking."""
    position = {c.candidate_id: i for i, c in enumerate(ranked_candidates)}
    return min(answer.members, key=lambda m: position[m.candidate_id]).candidate_id


def coverage(members: Sequence[str], human_rank: Mapping[str, int]) -> float | None:
    """Def. 3.4: share of the portfolio inside the human top-|P|; None for an empty one."""
    if not members:
        return None
    size = len(members)
    return sum(1 for m in members if human_rank[m] <= size) / size


def coverage_lower_bound(alpha: float, size: int) -> float:
    """Prop. 3.6: an aligned generator and α < 1/2 give c > (1 − 2α) / k*(α)."""
    return (1.0 - 2.0 * alpha) / size
