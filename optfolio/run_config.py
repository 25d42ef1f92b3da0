"""Parameters of a portfolio run: one typed model for the CLI, the flow and the Prefect UI form.

Validation happens here, before any paid call: a bad value is refused naming the field.
API keys are never parameters (Prefect stores parameters): they come from the environment.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from optfolio.errors import InputError

DatasetKind = Literal["jsonl", "nlp4lp", "nl4opt", "mamo", "optibench"]


def default_alpha_grid() -> list[float]:
    """α in (0, 1): 0.02, 0.04, …, 0.98 (each the double nearest i/50)."""
    return [i / 50 for i in range(1, 50)]


class ModelEndpoint(BaseModel):
    """Which model answers a role, and where. No base URL: ``$OPENAI_BASE_URL`` if set,
    else the embedded local model server, started for the run."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("qwen2.5-coder-1.5b", description="Model name at the endpoint")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. vLLM")
    timeout_s: float | None = Field(None, gt=0, description="Per request (default: 300 s)")


class SandboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(60.0, gt=0, le=3600, description="Wall time per candidate")
    memory_mb: int = Field(1024, ge=64, le=65536, description="Memory (and swap) per candidate")
    parallelism: int = Field(2, ge=1, le=64, description="Containers running at once")


class PortfolioRunParameters(BaseModel):
    """A dataset of problems in; candidates, executions, scores, judgments and portfolios out."""

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetKind = Field("jsonl", description="Dataset format")
    path: str | None = Field(None, description="Dataset file or folder (empty: shipped sample)")
    ids: list[str] | None = Field(None, description="Only these problem ids")
    limit: int | None = Field(None, ge=1, description="Only the first N problems")
    candidates: int = Field(50, ge=1, le=1000, description="Samples N per problem")
    eval_samples: int = Field(4, ge=1, le=64, description="Evaluator samples m per candidate")
    judge_samples: int = Field(1, ge=0, le=64, description="Judge samples (0: no judging)")
    alphas: list[float] = Field(default_factory=default_alpha_grid, description="α grid")
    sizes: list[int] = Field([2, 4, 6, 8], description="Fixed portfolio sizes s")
    random_draws: int = Field(30, ge=1, le=1000, description="Random s-subsets per problem")
    # Titles name each role in the Prefect UI form (else all three read "ModelEndpoint").
    generator: ModelEndpoint = Field(default_factory=ModelEndpoint, title="Generator")
    evaluator: ModelEndpoint = Field(default_factory=ModelEndpoint, title="Evaluator")
    judge: ModelEndpoint = Field(default_factory=ModelEndpoint, title="Judge")
    generator_max_tokens: int = Field(1024, ge=16, le=32768)
    review_max_tokens: int = Field(256, ge=8, le=8192)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings, title="Sandbox")
    concurrency: int = Field(2, ge=1, le=256, description="Problems in flight at once")
    task_runner: Literal["thread", "dask"] = Field(
        "thread", description="Where tasks run: threads of the flow's process, or Dask workers"
    )
    dask_address: str | None = Field(
        None,
        description="Dask scheduler, e.g. tcp://10.0.0.5:8786 (empty: a local cluster per run)",
    )
    seed: int = Field(0, ge=0, description="Seeds sampling, tie-breaks and random draws")
    store: str = Field(
        "store", description="Store root: a directory or a URI such as file:///shared/store"
    )
    run_id: str | None = Field(None, description="Re-use to resume a run; empty: a new id")

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

    @field_validator("ids")
    @classmethod
    def _ids_not_empty(cls, ids: list[str] | None) -> list[str] | None:
        if ids is not None and not [i for i in ids if i.strip()]:
            raise ValueError("the id list is empty")
        return ids

    def fingerprint(self) -> str:
        """What must not change when a run is resumed (all but where and how it executes)."""
        payload = self.model_dump(
            exclude={"store", "run_id", "concurrency", "sandbox", "task_runner", "dask_address"}
        )
        payload["sandbox"] = self.sandbox.model_dump(exclude={"parallelism"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def parse_parameters(**values: object) -> PortfolioRunParameters:
    """Build and validate parameters; a bad value becomes one InputError naming the field."""
    try:
        return PortfolioRunParameters(**values)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "parameters"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise InputError(f"parameter {where}: {first['msg']}{more}") from None
