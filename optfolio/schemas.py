"""The data contract between pipeline stages: one pyarrow schema per table.

Stage tables are written by the pipeline's tasks, one Parquet part at a time, under
``<store>/<table>/run_id=<run_id>/<part>.parquet``. ``run_id`` is *not* a column inside the
files: it is the Hive partition of the path, and every reader (DuckDB views, ``RunStore.read``)
adds it back. Assembled tables (rankings, portfolios, ...) are what ``sql/`` computes from the
stage tables; their schemas are here too so that materialized copies are typed the same way.

Candidate identity: ``candidate_id`` is a stable hash of (problem_id, normalized text), so
duplicate samples of one problem merge into one candidate whose ``n_samples`` counts them.

Generator probability: we keep the raw ``logprob_sum``, ``logprob_mean`` and ``token_count``
so SQL can compute the paper's length-normalized probability (default), the sequence
probability, or the empirical frequency of equivalent candidates (needs no log-probs).
"""

from __future__ import annotations

import pyarrow as pa

RUN_ID = "run_id"

PROBLEMS = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("description", pa.string(), nullable=False),
        pa.field("objective_truth", pa.float64()),  # optimal objective, where known
        pa.field("solution_truth", pa.string()),  # JSON of the known solution, where known
        pa.field("source", pa.string()),  # file and record the problem came from
    ]
)

CANDIDATES = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("n_samples", pa.int32(), nullable=False),  # duplicate samples merged here
        pa.field("sample_indices", pa.list_(pa.int32())),
        pa.field("text", pa.string()),  # the generator's whole answer
        pa.field("formulation", pa.string()),
        pa.field("code", pa.string()),
        pa.field("solver", pa.string()),  # solver package the code imports
        pa.field("valid", pa.bool_(), nullable=False),  # False: the invalid candidate ⊥
        pa.field("invalid_reason", pa.string()),
        pa.field("token_count", pa.int32()),
        pa.field("logprob_sum", pa.float64()),  # null when the endpoint gave no log-probs
        pa.field("logprob_mean", pa.float64()),
        pa.field("finish_reason", pa.string()),
        pa.field("model", pa.string()),
        pa.field("human_rank", pa.int32()),  # 1 = best; known in the simulated study only
    ]
)

EXECUTIONS = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("candidate_id", pa.string(), nullable=False),
        # ok | error | timeout | oom | output_limit | sandbox_error | skipped (⊥ has no code)
        pa.field("status", pa.string(), nullable=False),
        pa.field("exit_code", pa.int32()),
        pa.field("stdout", pa.string()),
        pa.field("stderr", pa.string()),
        pa.field("stdout_truncated", pa.bool_()),
        pa.field("stderr_truncated", pa.bool_()),
        pa.field("runtime_s", pa.float64()),
        pa.field("solver_status", pa.string()),
        pa.field("objective", pa.float64()),
        pa.field("image", pa.string()),
    ]
)

SCORES = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("score", pa.float64()),  # 1..100; null when unparseable or out of range
        pa.field("raw_text", pa.string()),
        pa.field("model", pa.string()),
        # The text is the second ask's: the first reply had no readable score. Null in parts
        # written before replies were asked again.
        pa.field("reasked", pa.bool_()),
    ]
)

JUDGMENTS = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("score", pa.float64()),  # 1..100; null when unparseable or out of range
        pa.field("normalized_score", pa.float64()),  # (score - 1) / 99, in [0, 1]
        pa.field("raw_text", pa.string()),
        pa.field("model", pa.string()),
        pa.field("reasked", pa.bool_()),  # as in SCORES
    ]
)

# What the LLM calls of one task cost (per problem and role), for per-run accounting.
LLM_USAGE = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),  # generator | evaluator | judge
        pa.field("model", pa.string(), nullable=False),
        pa.field("requests", pa.int64(), nullable=False),
        pa.field("retries", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("cached_tokens", pa.int64(), nullable=False),
        pa.field("cache_hits", pa.int64(), nullable=False),  # samples served by our cache
        pa.field("samples", pa.int64(), nullable=False),
        # Review samples asked again for want of a readable score (their extra request is in
        # ``requests``); null in parts written before replies were asked again.
        pa.field("reasked_samples", pa.int64()),
    ]
)

# The simulated study's design: which (K, generator, evaluator error, seed) a problem stands for.
SIM_CONFIGS = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("K", pa.int32(), nullable=False),
        pa.field("generator", pa.string(), nullable=False),
        pa.field("evaluator_error", pa.float64(), nullable=False),
        pa.field("seed", pa.int32(), nullable=False),
    ]
)

# A reviewer's decision for one problem of a finished run: one candidate of the portfolio at
# ``alpha`` chosen, or the whole portfolio rejected with a comment. One part per problem, so
# deciding again replaces the earlier decision.
DECISIONS = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("alpha", pa.float64(), nullable=False),  # the portfolio the reviewer saw
        pa.field("evaluator", pa.string(), nullable=False),  # an evaluator kind: its ranking
        pa.field("decision", pa.string(), nullable=False),  # chosen | rejected
        pa.field("candidate_id", pa.string()),  # the chosen member; null when rejected
        pa.field("comment", pa.string(), nullable=False),  # required when rejected
        pa.field("reviewer", pa.string(), nullable=False),
        pa.field("decided_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # ui (a paused review flow) | cli
    ]
)

# A conformal calibration of α (optfolio.calibration): one file per name,
# ``<store>/calibrations/<name>.parquet`` (no run partition: it reads several runs).
CALIBRATIONS = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("alpha", pa.float64(), nullable=False),  # α̂
        pa.field("delta", pa.float64(), nullable=False),  # miss probability asked for
        pa.field("evaluator", pa.string(), nullable=False),  # the ranking calibrated
        pa.field("unit", pa.string(), nullable=False),  # candidate | answer
        pa.field("runs", pa.list_(pa.string()), nullable=False),  # the calibration runs
        pa.field("problems", pa.int64(), nullable=False),  # n: those with ground truth
        pa.field("problems_never", pa.int64(), nullable=False),  # with no correct unit
        pa.field("floor", pa.float64(), nullable=False),  # problems_never / problems
        pa.field("achievable_delta", pa.float64(), nullable=False),  # (never + 1)/(n + 1)
        pa.field("empirical_coverage", pa.float64(), nullable=False),  # at α̂, in calibration
        pa.field("mean_size", pa.float64(), nullable=False),  # mean k*(α̂)
        pa.field("settings", pa.string(), nullable=False),  # JSON: k, tolerance, skipped
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

# ---- assembled by sql/ -------------------------------------------------------------------

RANKINGS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("evaluator", pa.string(), nullable=False),  # kind, optfolio.evaluators
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),  # 1 = best
        pa.field("p", pa.float64(), nullable=False),
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("cum_p", pa.float64(), nullable=False),
    ]
)

PORTFOLIOS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("evaluator", pa.string(), nullable=False),
        pa.field("alpha", pa.float64(), nullable=False),
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),
        pa.field("p", pa.float64(), nullable=False),
    ]
)

SIMULATION = pa.schema(
    [
        pa.field("K", pa.int32(), nullable=False),
        pa.field("generator", pa.string(), nullable=False),
        pa.field("evaluator_error", pa.float64(), nullable=False),
        pa.field("seed", pa.int32(), nullable=False),
        pa.field("alpha", pa.float64(), nullable=False),
        pa.field("portfolio_size", pa.int64(), nullable=False),
        pa.field("coverage", pa.float64()),
    ]
)

STAGE_TABLES: dict[str, pa.Schema] = {
    "problems": PROBLEMS,
    "candidates": CANDIDATES,
    "executions": EXECUTIONS,
    "scores": SCORES,
    "judgments": JUDGMENTS,
    "llm_usage": LLM_USAGE,
    "sim_configs": SIM_CONFIGS,
    "decisions": DECISIONS,
}
