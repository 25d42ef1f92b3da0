"""A finished portfolio run without any LLM or Docker: stage tables written as the tasks write
them (one part per problem, the same schemas), then assembled by the same task code.

Four small problems, each with five candidates sampled from one template:

| candidate | objective | evaluator mean | judge | generator mean log-prob |
| --- | --- | --- | --- | --- |
| ``best`` | the truth | 87.5 | 0.95 | -0.1 |
| ``wrong`` | 1.1 × truth | 72.5 | 0.40 | -0.3 |
| ``also_right`` | the truth | 55.0 | 0.80 | -0.6 |
| ``crashes`` | none (``error``) | 15.0 | 0.05 | -0.9 |
| ``invalid`` | ⊥: no code (``skipped``) | - | - | -0.2 |

With the LLM evaluator and α = 0.5 the portfolio is ``best``, ``wrong``, ``also_right`` (the
first three reach mass 0.64 ≥ 0.5); α = 1 keeps ``best`` alone. ``open-ended`` has no ground
truth, so its correctness is unknown (null). Candidate ids are the real hashes of the texts.

``synthetic_finished_run`` is shared by the whole session: read it, never write to it. A test
that writes (decisions, say) builds its own copy with ``build_finished_run(tmp_path)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from optfolio.llm.parsing import candidate_id, parse_candidate
from optfolio.run_config import PortfolioRunParameters, RunRef
from optfolio.runs import open_run
from optfolio.schemas import CANDIDATES, EXECUTIONS, JUDGMENTS, LLM_USAGE, PROBLEMS, SCORES
from optfolio.store import RunStore, part_name

SYNTHETIC_RUN_ID = "synthetic-run"


@dataclass(frozen=True)
class SyntheticProblem:
    problem_id: str
    description: str
    objective_truth: float | None
    objective_if_unknown: float = 10.0  # what the candidates find when there is no truth

    @property
    def right_objective(self) -> float:
        return self.objective_if_unknown if self.objective_truth is None else self.objective_truth


SYNTHETIC_PROBLEMS: tuple[SyntheticProblem, ...] = (
    SyntheticProblem(
        "furniture",
        "A workshop makes chairs (profit 5) and tables (profit 8) from 30 hours of labour; a"
        " chair takes 1 hour and a table 2. At most 10 chairs sell. Maximize profit.",
        120.0,
    ),
    SyntheticProblem(
        "diet",
        "Choose servings of oats (cost 0.5, protein 5) and milk (cost 1.25, protein 8) to get"
        " at least 40 protein at least cost.",
        4.0,
    ),
    SyntheticProblem(
        "shipping",
        "Ship 100 units from two depots (cost 3 and 4 per unit, capacity 60 each) to one"
        " store at least cost.",
        340.0,
    ),
    SyntheticProblem(
        "open-ended",
        "Allocate 10 hours between two tasks worth 1 per hour each. Maximize value.",
        None,
    ),
)


@dataclass(frozen=True)
class CandidateTemplate:
    role: str  # stable name across problems, in the candidate's text
    objective_factor: float | None  # × the right objective; None: the code crashes
    logprob_mean: float
    evaluator_scores: tuple[float, ...]
    judge_score: float | None  # 1..100
    has_code: bool = True


CANDIDATE_TEMPLATES: tuple[CandidateTemplate, ...] = (
    CandidateTemplate("best", 1.0, -0.1, (90.0, 85.0), 95.05),
    CandidateTemplate("wrong", 1.1, -0.3, (70.0, 75.0), 40.6),
    CandidateTemplate("also_right", 1.0, -0.6, (60.0, 50.0), 80.2),
    CandidateTemplate("crashes", None, -0.9, (10.0, 20.0), 5.95),
    CandidateTemplate("invalid", None, -0.2, (), None, has_code=False),
)
TOKENS_PER_CANDIDATE = 40


def candidate_text(problem: SyntheticProblem, template: CandidateTemplate) -> str:
    formulation = (
        f"Formulation ({template.role}) for {problem.problem_id}: variables x, y >= 0;"
        " objective and constraints as stated in the problem."
    )
    if not template.has_code:
        return formulation + "\n(The model ran out of ideas before writing any code.)"
    if template.objective_factor is None:
        body = "raise RuntimeError('infeasible data read')"
    else:
        objective = problem.right_objective * template.objective_factor
        body = f"print('STATUS: Optimal')\nprint('OBJECTIVE: {objective!r}')"
    code = f"import pulp\n\nmodel = pulp.LpProblem('{problem.problem_id}', pulp.LpMaximize)\n{body}"
    return f"{formulation}\n\n```python\n{code}\n```\n"


def synthetic_candidate_id(problem_id: str, role: str) -> str:
    """The id of the candidate playing ROLE (``best``, ``wrong``, ...) in PROBLEM_ID."""
    problem = next(p for p in SYNTHETIC_PROBLEMS if p.problem_id == problem_id)
    template = next(t for t in CANDIDATE_TEMPLATES if t.role == role)
    return candidate_id(problem_id, candidate_text(problem, template))


def _problem_tables(problem: SyntheticProblem) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {name: [] for name in ("candidates", "executions", "scores")}
    rows["judgments"] = []
    for index, template in enumerate(CANDIDATE_TEMPLATES):
        text = candidate_text(problem, template)
        parsed = parse_candidate(text, "stop")
        cid = candidate_id(problem.problem_id, text)
        assert parsed.valid == template.has_code, (template.role, parsed.invalid_reason)
        rows["candidates"].append(
            {
                "problem_id": problem.problem_id,
                "candidate_id": cid,
                "n_samples": 1,
                "sample_indices": [index],
                "text": text,
                "formulation": parsed.formulation,
                "code": parsed.code,
                "solver": parsed.solver,
                "valid": parsed.valid,
                "invalid_reason": parsed.invalid_reason,
                "token_count": TOKENS_PER_CANDIDATE,
                "logprob_sum": template.logprob_mean * TOKENS_PER_CANDIDATE,
                "logprob_mean": template.logprob_mean,
                "finish_reason": "stop",
                "model": "synthetic-generator",
                "human_rank": None,
            }
        )
        rows["executions"].append(_execution(problem, template, cid))
        for sample, score in enumerate(template.evaluator_scores):
            rows["scores"].append(
                {
                    "problem_id": problem.problem_id,
                    "candidate_id": cid,
                    "sample_index": sample,
                    "score": score,
                    "raw_text": f"SCORE: {score:g}",
                    "model": "synthetic-evaluator",
                }
            )
        if template.judge_score is not None:
            rows["judgments"].append(
                {
                    "problem_id": problem.problem_id,
                    "candidate_id": cid,
                    "sample_index": 0,
                    "score": template.judge_score,
                    "normalized_score": (template.judge_score - 1) / 99,
                    "raw_text": f"SCORE: {template.judge_score:g}",
                    "model": "synthetic-judge",
                }
            )
    return rows


def _execution(problem: SyntheticProblem, template: CandidateTemplate, cid: str) -> dict:
    base = {"problem_id": problem.problem_id, "candidate_id": cid, "image": "synthetic"}
    if not template.has_code:
        return base | {"status": "skipped"}
    if template.objective_factor is None:
        return base | {
            "status": "error",
            "exit_code": 1,
            "stdout": "",
            "stderr": "Traceback (most recent call last):\nRuntimeError: infeasible data read\n",
            "stdout_truncated": False,
            "stderr_truncated": False,
            "runtime_s": 0.4,
        }
    objective = problem.right_objective * template.objective_factor
    return base | {
        "status": "ok",
        "exit_code": 0,
        "stdout": f"STATUS: Optimal\nOBJECTIVE: {objective!r}\n",
        "stderr": "",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "runtime_s": 0.8,
        "solver_status": "Optimal",
        "objective": objective,
    }


def _table(schema: pa.Schema, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{f: row.get(f) for f in schema.names} for row in rows], schema)


def build_finished_run(
    root: Path, run_id: str = SYNTHETIC_RUN_ID, problems: tuple[SyntheticProblem, ...] | None = None
) -> tuple[RunStore, str]:
    """Write a finished run into a store at ROOT, as `portfolio_run` leaves one."""
    from tasks.assemble import assemble_run

    problems = SYNTHETIC_PROBLEMS if problems is None else problems
    store = RunStore(root)
    parameters = PortfolioRunParameters(
        store=str(store.root),
        run_id=run_id,
        candidates=len(CANDIDATE_TEMPLATES),
        eval_samples=2,
        judge_samples=1,
    )
    open_run(store, run_id, parameters)
    problem_rows = [
        {
            "problem_id": p.problem_id,
            "dataset": "synthetic",
            "description": p.description,
            "objective_truth": p.objective_truth,
            "source": f"tests/plugins/run_fixtures.py#{p.problem_id}",
        }
        for p in problems
    ]
    store.write_part(
        "problems", run_id, "dataset", _table(PROBLEMS, problem_rows)
    )  # as load_dataset
    schemas = {
        "candidates": CANDIDATES,
        "executions": EXECUTIONS,
        "scores": SCORES,
        "judgments": JUDGMENTS,
    }
    for problem in problems:
        part = part_name(problem.problem_id)
        for table, rows in _problem_tables(problem).items():
            store.write_part(table, run_id, part, _table(schemas[table], rows))
        usage = [
            {
                "problem_id": problem.problem_id,
                "role": role,
                "model": f"synthetic-{role}",
                "requests": 1,
                "retries": 0,
                "prompt_tokens": 200,
                "completion_tokens": 100,
                "cached_tokens": 0,
                "cache_hits": 0,
                "samples": samples,
            }
            for role, samples in (("generator", 5), ("evaluator", 8), ("judge", 4))
        ]
        for row in usage:
            store.write_part("llm_usage", run_id, f"{row['role']}-{part}", _table(LLM_USAGE, [row]))
    # The task's own function (no Prefect run needed): the same views, the same files.
    assemble_run.fn(RunRef(store=str(store.root), run_id=run_id), parameters)
    return store, run_id


@pytest.fixture(scope="session")
def synthetic_finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str]:
    """(store, run_id) of a finished synthetic run; shared by the session, so read-only."""
    return build_finished_run(tmp_path_factory.mktemp("synthetic-store"))
