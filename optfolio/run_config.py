"""Parameters of a portfolio run: one typed model for the CLI, the flow and the Prefect UI form.

Validation happens here, before any paid call: a bad value is refused naming the field.
API keys are never parameters (Prefect stores parameters): they come from the environment.
The sandbox's defaults and bounds are ``sandbox.limits``'s. The stage tasks take the parts
they need: a :class:`ProblemRef` (where to read and write) and a :class:`RoleRequest` (what
one LLM role is asked) or the :class:`SandboxSettings`.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from optfolio.datasets import DatasetKind
from optfolio.errors import InputError
from optfolio.parameters import Cli, open_alpha_grid, parse_model
from optfolio.portfolio import ProbabilityMethod
from sandbox import limits

if TYPE_CHECKING:
    from sandbox.limits import Limits


class ModelEndpoint(BaseModel):
    """Which model answers a role, and where. No base URL: ``$OPENAI_BASE_URL`` if set,
    else the embedded local model server, started for the run."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("qwen2.5-coder-1.5b", description="Model name at the endpoint")
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint, e.g. vLLM (empty: $OPENAI_BASE_URL, else the"
        " local model server)",
    )
    timeout_s: Annotated[float | None, Cli("--request-timeout")] = Field(
        None,
        gt=0,
        description="Seconds a request may wait on a silent endpoint (empty: 300 s;"
        " serve-local reports progress while it works, so there this bounds a stall)",
    )
    api_key_secret: str | None = Field(
        None,
        description="Prefect Secret block holding the API key, read by each task at call time"
        " (empty: $OPENAI_API_KEY)",
    )


class SandboxSettings(BaseModel):
    """What each candidate's container may use: the defaults and bounds of ``sandbox.limits``."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: Annotated[float, Cli("--timeout")] = Field(
        limits.TIMEOUT_S,
        gt=0,
        le=limits.TIMEOUT_S_MAX,
        description="Sandbox wall time per candidate, in seconds",
    )
    memory_mb: Annotated[int, Cli("--memory")] = Field(
        limits.MEMORY_MB,
        ge=limits.MEMORY_MB_MIN,
        le=limits.MEMORY_MB_MAX,
        description="Sandbox memory (and swap) per candidate, in MB",
    )
    parallelism: int = Field(
        limits.PARALLELISM,
        ge=1,
        le=limits.PARALLELISM_MAX,
        description="Sandbox containers running at once, per problem",
    )

    def container_limits(self) -> Limits:
        """The sandbox's own limits for a candidate of this run."""
        return limits.Limits(timeout_s=self.timeout_s, memory_mb=self.memory_mb)


class InlineProblem(BaseModel):
    """One problem given with the run (the UI form, ``--problem``, ``--problem-file``) instead
    of a dataset file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Problem id, e.g. blending-1")
    description: str = Field(min_length=1, description="The decision problem in plain language")
    objective: float | None = Field(
        None, description="Known optimal objective value, if any (enables judging)"
    )

    @field_validator("id")
    @classmethod
    def _id_is_a_safe_name(cls, problem_id: str) -> str:
        # Imported here: the store's pyarrow.dataset would slow every CLI start by ~0.5 s.
        from optfolio.store import check_name

        try:
            return check_name("problem id", problem_id)
        except InputError as error:
            raise ValueError(str(error)) from None


class PortfolioRunParameters(BaseModel):
    """A dataset of problems in; candidates, executions, scores, judgments and portfolios out."""

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetKind = Field("jsonl", description="Dataset format")
    path: str | None = Field(None, description="Dataset file or folder (empty: shipped sample)")
    problems: Annotated[list[InlineProblem] | None, Cli(command_sets=True)] = Field(
        None,
        title="Problems (inline)",
        description="Problems given here instead of a dataset file (dataset and path unused)",
    )
    ids: list[str] | None = Field(None, description="Only these problem ids")
    limit: int | None = Field(None, ge=1, description="Only the first N problems")
    candidates: int = Field(50, ge=1, le=1000, description="Samples N per problem")
    eval_samples: int = Field(4, ge=1, le=64, description="Evaluator samples m per candidate")
    # None is resolved to eval_samples (below): the judge scores as the evaluator does.
    judge_samples: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Judge samples per candidate (empty: as many as the evaluator's m;"
        " 0: no judging)",
    )
    alphas: list[float] = Field(
        default_factory=open_alpha_grid, description="α grid, each in (0, 1)"
    )
    sizes: list[int] = Field([2, 4, 6, 8], description="Fixed portfolio sizes s")
    random_draws: int = Field(30, ge=1, le=1000, description="Random s-subsets per problem")
    calibration: str | None = Field(
        None,
        description="Stored calibration (optfolio calibrate --name): its α̂ joins the α grid,"
        " flagged calibrated",
    )
    p_method: ProbabilityMethod = Field(
        "length_normalized",
        description="Generator probability p(o): length_normalized (exp of the mean token"
        " log-prob), sequence (exp of the summed log-prob) or frequency (share of samples)",
    )
    # Titles name each role in the Prefect UI form (else all three read "ModelEndpoint"); on
    # the command line, --model, --base-url and --request-timeout set all three roles.
    generator: Annotated[ModelEndpoint, Cli(prefix="")] = Field(
        default_factory=ModelEndpoint, title="Generator", description="Writes the candidates"
    )
    evaluator: Annotated[ModelEndpoint, Cli(prefix="")] = Field(
        default_factory=ModelEndpoint, title="Evaluator", description="Scores each candidate"
    )
    judge: Annotated[ModelEndpoint, Cli(prefix="")] = Field(
        default_factory=ModelEndpoint,
        title="Judge",
        description="Scores each candidate knowing the ground truth",
    )
    generator_max_tokens: int = Field(
        1024, ge=16, le=32768, description="Token cap per generated candidate"
    )
    review_max_tokens: int = Field(
        256, ge=8, le=8192, description="Token cap per evaluator or judge answer"
    )
    sandbox: SandboxSettings = Field(
        default_factory=SandboxSettings, title="Sandbox", description="Limits per candidate"
    )
    concurrency: int = Field(2, ge=1, le=256, description="Problems in flight at once")
    task_runner: Literal["thread", "dask"] = Field(
        "thread", description="Where tasks run: threads of the flow's process, or Dask workers"
    )
    dask_address: str | None = Field(
        None,
        description="Dask scheduler, e.g. tcp://10.0.0.5:8786 (empty: a local cluster per run)",
    )
    seed: int = Field(0, ge=0, description="Seeds sampling, tie-breaks and random draws")
    store: Annotated[str, Cli(envvar="OPTFOLIO_STORE")] = Field(
        "store", description="Store root: a directory or a URI such as file:///shared/store"
    )
    run_id: str | None = Field(
        None,
        description="Re-use to resume a run; empty: derived from the flow run, so a retry of"
        " the flow run resumes it",
    )
    endpoint_limit: int = Field(
        4,
        ge=0,
        le=1024,
        description="Requests in flight at once per endpoint, shared by every run, process and"
        " worker on one Prefect server (0: no shared limit)",
    )
    duckdb_memory_limit: str = Field(
        "512MB",
        pattern=r"^\s*\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$",
        description="DuckDB memory_limit while assembling views (spills to disk beyond it)",
    )

    @field_validator("alphas")
    @classmethod
    def _alphas_inside_unit_interval(cls, alphas: list[float]) -> list[float]:
        if not alphas:
            raise ValueError("give at least one α")
        bad = [a for a in alphas if not (0.0 < a < 1.0)]
        if bad:
            raise ValueError(f"every α must lie in (0, 1); got {bad[:3]}")
        return sorted(set(alphas))

    @field_validator("sizes")
    @classmethod
    def _positive_sizes(cls, sizes: list[int]) -> list[int]:
        if any(s < 1 for s in sizes):
            raise ValueError(f"portfolio sizes must be ≥ 1; got {sizes}")
        return sorted(set(sizes))

    @field_validator("problems")
    @classmethod
    def _problems_given_once(
        cls, problems: list[InlineProblem] | None
    ) -> list[InlineProblem] | None:
        if problems is not None and not problems:
            raise ValueError("the list is empty (null, not [], runs a dataset)")
        seen: set[str] = set()
        for problem in problems or []:
            if problem.id in seen:
                raise ValueError(f"duplicate problem id {problem.id!r}")
            seen.add(problem.id)
        return problems

    @model_validator(mode="after")
    def _judge_samples_default_to_eval_samples(self) -> PortfolioRunParameters:
        # The judge works under the evaluator's scoring regime, its number of samples included,
        # unless asked for fewer (the demo). Resolved here, so the fingerprint, the manifest
        # and every stage see the integer.
        if self.judge_samples is None:
            self.judge_samples = self.eval_samples
        return self

    @model_validator(mode="after")
    def _problems_or_path(self) -> PortfolioRunParameters:
        if self.problems is not None and self.path is not None:
            raise ValueError(
                "problems and path are exclusive: inline problems replace the dataset file"
            )
        return self

    @field_validator("ids")
    @classmethod
    def _ids_not_empty(cls, ids: list[str] | None) -> list[str] | None:
        if ids is not None and not [i for i in ids if i.strip()]:
            raise ValueError("the id list is empty")
        return ids

    def fingerprint(self) -> str:
        """What must not change when a run is resumed (all but where and how it executes)."""
        payload = self.model_dump(
            exclude={
                "store",
                "run_id",
                "concurrency",
                "sandbox",
                "task_runner",
                "dask_address",
                "endpoint_limit",
                "duckdb_memory_limit",
            }
        )
        for role in ("generator", "evaluator", "judge"):  # where the key lives is not the run
            payload[role].pop("api_key_secret", None)
        if payload["problems"] is None:  # runs from before inline problems keep their print
            del payload["problems"]
        if payload["calibration"] is None:  # likewise runs from before calibration
            del payload["calibration"]
        if payload["p_method"] == "length_normalized":  # as do runs from before p_method
            del payload["p_method"]
        payload["sandbox"] = self.sandbox.model_dump(exclude={"parallelism"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def role_request(self, role: Role, endpoint: ModelEndpoint) -> RoleRequest:
        """What ROLE is asked per problem (its samples, token cap and the seed), at ENDPOINT
        (the role's endpoint once resolved)."""
        samples, max_tokens = {
            "generator": (self.candidates, self.generator_max_tokens),
            "evaluator": (self.eval_samples, self.review_max_tokens),
            "judge": (self.judge_samples, self.review_max_tokens),
        }[role]
        return RoleRequest(
            endpoint=endpoint, samples=samples, max_tokens=max_tokens, seed=self.seed
        )


Role = Literal["generator", "evaluator", "judge"]


class RoleRequest(BaseModel):
    """What one LLM role is asked for each problem: N candidates (generator) or m samples per
    candidate (evaluator, judge), each answer capped at MAX_TOKENS, seeded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: ModelEndpoint
    samples: int = Field(ge=0)  # a judge with 0 samples is not asked at all
    max_tokens: int = Field(ge=1)
    seed: int = Field(ge=0)


class RunRef(BaseModel):
    """One run in a store: where a task reads and writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str
    run_id: str

    def problem(self, problem_id: str) -> ProblemRef:
        return ProblemRef(store=self.store, run_id=self.run_id, problem_id=problem_id)


class ProblemRef(RunRef):
    """One problem of one run: a stage task reads and writes its parts."""

    problem_id: str


def parse_parameters(**values: object) -> PortfolioRunParameters:
    """Build and validate parameters; a bad value becomes one InputError naming the field."""
    return parse_model(PortfolioRunParameters, values)
