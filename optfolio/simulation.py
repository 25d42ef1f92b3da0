"""The paper's simulated study (§4.1, App. B.1), as data the portfolio SQL can assemble.

K candidates with human ranking 1..K (1 = best). A *generator* gives them probabilities, an
*evaluator* with error ε ranks them. Each (K, generator, ε, seed) is one simulated problem,
written in the same ``candidates`` / ``scores`` shape as a real run, so one set of SQL serves
both: log p becomes the candidate's log-prob (one token), the evaluator's ranking becomes one
score sample per candidate (K + 1 − evaluator position).

Generators (probability of the candidate at human rank i):
  aligned          p(i) ∝ K + 1 − i
  weakly_aligned   the first half (ranks 1..⌊K/2⌋) holds mass m ~ U[0.5, 0.99), split by random
                   uniform weights; the second half holds 1 − m, split the same way
  uniform          p(i) = 1/K
  misaligned       p(i) ∝ i
Evaluator with error ε: its ranking differs from the human one at exactly round(εK) positions
(a uniformly random derangement of that many randomly chosen positions); ε = 1 is the
reversed ranking.
"""

from __future__ import annotations

import math
import zlib
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from optfolio.errors import InputError
from optfolio.parameters import ALPHA_STEP, Cli, closed_alpha_grid
from optfolio.schemas import CANDIDATES, SCORES, SIM_CONFIGS

GeneratorKind = Literal["aligned", "weakly_aligned", "uniform", "misaligned"]
GENERATORS: tuple[GeneratorKind, ...] = ("aligned", "weakly_aligned", "uniform", "misaligned")
WEAK_FIRST_HALF_MASS = (0.5, 0.99)


class StudyDesign(BaseModel):
    """The grid of the simulated study; the defaults are the paper's. A bad value is a
    ValidationError naming the field (``optfolio.parameters.parse_model``: one InputError)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    Ks: Annotated[list[int], Cli("--K")] = Field(
        [10, 20, 50, 100], description="Candidate counts K, each ≥ 2"
    )
    generators: list[GeneratorKind] = Field(list(GENERATORS), description="Generator types")
    evaluator_errors: Annotated[list[float], Cli("--errors")] = Field(
        [0.0, 0.3, 0.5, 0.7, 1.0], description="Evaluator errors ε, each in [0, 1]"
    )
    seeds: int = Field(40, description="Seeds per configuration")
    alpha_step: float = Field(ALPHA_STEP, description="Step of the α grid from 0 to 1")

    @field_validator("Ks", mode="before")
    @classmethod
    def _candidate_counts(cls, Ks: object) -> object:
        if isinstance(Ks, list | tuple):
            if not Ks:
                raise ValueError("K: give at least one number of candidates")
            for K in Ks:
                if not isinstance(K, int) or isinstance(K, bool) or K < 2:
                    raise ValueError(f"K={K!r}: the number of candidates must be an integer ≥ 2")
        return Ks

    @field_validator("generators", mode="before")
    @classmethod
    def _known_generators(cls, generators: object) -> object:
        for name in generators if isinstance(generators, list | tuple) else ():
            if name not in GENERATORS:
                raise ValueError(f"generator {name!r}: use one of {', '.join(GENERATORS)}")
        return generators

    @field_validator("evaluator_errors")
    @classmethod
    def _errors_in_unit_interval(cls, errors: list[float]) -> list[float]:
        for error in errors:
            if not (0.0 <= error <= 1.0):
                raise ValueError(f"evaluator_error={error!r} is outside [0, 1]")
        return errors

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, seeds: int) -> int:
        if seeds < 1:
            raise ValueError(f"seeds={seeds!r}: need at least one seed")
        return seeds

    @field_validator("alpha_step")
    @classmethod
    def _step_divides_one(cls, step: float) -> float:
        if not step > 0:
            raise ValueError(f"alpha_step={step!r} does not divide 1")
        closed_alpha_grid(step)  # raises if the step does not divide 1
        return step

    @model_validator(mode="after")
    def _possible_errors(self) -> StudyDesign:
        for error in self.evaluator_errors:
            for K in self.Ks:
                positions_to_change(error, K)  # refuses impossible (K, ε) pairs up front
        return self

    @property
    def alphas(self) -> tuple[float, ...]:
        """The α grid: 0, alpha_step, …, 1."""
        return tuple(closed_alpha_grid(self.alpha_step))

    def design(self) -> StudyDesign:
        """The study alone (what the simulated problems and the results depend on)."""
        return StudyDesign(**self.model_dump(include=set(StudyDesign.model_fields)))


class SimulationParameters(StudyDesign):
    """The ``simulate`` flow's parameters: the study's design and where to write it."""

    out: str = Field(
        "out/simulation-study", description="Output directory (the study's store root)"
    )


def positions_to_change(error: float, K: int) -> int:
    """round(εK), half up; exactly one changed position is impossible for a permutation."""
    count = K if error >= 1.0 else math.floor(error * K + 0.5)
    if count == 1:
        raise InputError(
            f"evaluator_error={error} with K={K}: a ranking cannot differ from another at"
            " exactly one position; choose ε with round(εK) ≠ 1"
        )
    return count


def problem_id(K: int, generator: str, error: float, seed: int) -> str:
    return f"sim-K{K}-{generator}-e{error:g}-s{seed}"


def _rng(*parts: object) -> np.random.Generator:
    # Independent, reproducible streams per (seed, K, role...): crc32 of the names keeps
    # entropy stable across processes (Python's hash() is salted).
    entropy = [zlib.crc32(str(part).encode()) for part in parts]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def generator_probabilities(kind: GeneratorKind, K: int, rng: np.random.Generator) -> np.ndarray:
    """p over human ranks 1..K (index 0 = best)."""
    ranks = np.arange(1, K + 1, dtype=float)
    if kind == "aligned":
        weights = K + 1 - ranks
    elif kind == "misaligned":
        weights = ranks
    elif kind == "uniform":
        weights = np.ones(K)
    elif kind == "weakly_aligned":
        half = K // 2
        first_half_mass = rng.uniform(*WEAK_FIRST_HALF_MASS)
        first = rng.uniform(size=half)
        second = rng.uniform(size=K - half)
        # uniform weights can be ~0; a floor keeps every log p finite
        first, second = np.maximum(first, 1e-12), np.maximum(second, 1e-12)
        weights = np.concatenate(
            [first_half_mass * first / first.sum(), (1 - first_half_mass) * second / second.sum()]
        )
    else:
        raise InputError(f"generator {kind!r}: use one of {', '.join(GENERATORS)}")
    return weights / weights.sum()


def evaluator_ranking(error: float, K: int, rng: np.random.Generator) -> np.ndarray:
    """The evaluator's ranking as human ranks in evaluator order (position j holds rank σ(j))."""
    if error >= 1.0:
        return np.arange(K, 0, -1)
    order = np.arange(1, K + 1)
    count = positions_to_change(error, K)
    if count == 0:
        return order
    chosen = np.sort(rng.choice(K, size=count, replace=False))
    while True:  # rejection sampling gives a uniform derangement (≈ e tries)
        shuffled = rng.permutation(chosen)
        if np.all(shuffled != chosen):
            break
    ranking = order.copy()
    ranking[chosen] = order[shuffled]
    return ranking


def realized_error(ranking: np.ndarray) -> float:
    """The share of positions where an evaluator ranking differs from the human one."""
    return float(np.mean(ranking != np.arange(1, len(ranking) + 1)))


def simulate_problems(K: int, design: StudyDesign) -> dict[str, pa.Table]:
    """Every simulated problem for one K: ``candidates``, ``scores`` and ``sim_configs`` rows."""
    candidates: dict[str, list] = {name: [] for name in CANDIDATES.names}
    scores: dict[str, list] = {name: [] for name in SCORES.names}
    configs: dict[str, list] = {name: [] for name in SIM_CONFIGS.names}
    human_ranks = np.arange(1, K + 1)
    for generator in design.generators:
        for error in design.evaluator_errors:
            for seed in range(design.seeds):
                pid = problem_id(K, generator, error, seed)
                probabilities = generator_probabilities(generator, K, _rng(seed, K, generator))
                ranking = evaluator_ranking(error, K, _rng(seed, K, "evaluator", error))
                log_p = np.log(probabilities)
                ids = [f"rank-{rank:03d}" for rank in human_ranks]
                candidates["problem_id"] += [pid] * K
                candidates["candidate_id"] += ids
                candidates["n_samples"] += [1] * K
                candidates["sample_indices"] += [[i] for i in range(K)]
                for name in ("text", "formulation", "code", "solver", "invalid_reason"):
                    candidates[name] += [None] * K
                candidates["valid"] += [True] * K
                candidates["token_count"] += [1] * K
                candidates["logprob_sum"] += log_p.tolist()
                candidates["logprob_mean"] += log_p.tolist()
                candidates["finish_reason"] += ["simulated"] * K
                candidates["model"] += [f"simulated-{generator}"] * K
                candidates["human_rank"] += human_ranks.tolist()
                # evaluator position j (0-based) gets score K − j: its ranking, reproduced by SQL
                scores["problem_id"] += [pid] * K
                scores["candidate_id"] += [ids[rank - 1] for rank in ranking]
                scores["sample_index"] += [0] * K
                scores["score"] += [float(K - j) for j in range(K)]
                scores["raw_text"] += [None] * K
                scores["model"] += [f"simulated-evaluator-e{error:g}"] * K
                scores["reasked"] += [False] * K
                configs["problem_id"].append(pid)
                configs["K"].append(K)
                configs["generator"].append(generator)
                configs["evaluator_error"].append(float(error))
                configs["seed"].append(seed)
    return {
        "candidates": pa.Table.from_pydict(candidates, schema=CANDIDATES),
        "scores": pa.Table.from_pydict(scores, schema=SCORES),
        "sim_configs": pa.Table.from_pydict(configs, schema=SIM_CONFIGS),
    }
