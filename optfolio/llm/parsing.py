"""Reading model answers: the formulation and code of a candidate, the score of a review."""

from __future__ import annotations

import ast
import hashlib
import re
import textwrap
from dataclasses import dataclass

# Solver packages a candidate may build its model with, by the top-level module it imports.
SOLVER_PACKAGES: dict[str, str] = {
    "pulp": "pulp",
    "highspy": "highspy",
    "pyomo": "pyomo",
    "ortools": "ortools",
    "scipy": "scipy",
    "gurobipy": "gurobipy",
    "coptpy": "coptpy",
    "cvxpy": "cvxpy",
    "mip": "mip",
    "docplex": "docplex",
}

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
_OPEN_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(python|py|python3)?[ \t]*\n(.*)\Z", re.MULTILINE | re.DOTALL
)
_SCORE = re.compile(r"score\s*(?:\*\*)?\s*[:=]\s*(?:\*\*)?\s*([-+]?\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedCandidate:
    formulation: str | None
    code: str | None
    solver: str | None
    valid: bool
    invalid_reason: str | None


def normalize_text(text: str) -> str:
    """Whitespace-insensitive form used for duplicate detection (indentation inside lines kept)."""
    lines = [line.rstrip() for line in text.strip().replace("\r\n", "\n").splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):  # collapse runs of blank lines
            out.append(line)
    return "\n".join(out).strip()


def candidate_id(problem_id: str, text: str) -> str:
    """Stable identity of a candidate: a hash of the problem and the normalized answer."""
    digest = hashlib.sha256(f"{problem_id}\x00{normalize_text(text)}".encode()).hexdigest()
    return f"c-{digest[:20]}"


def parse_candidate(text: str, finish_reason: str | None = None) -> ParsedCandidate:
    """Split an answer into formulation and the first Python block (the code ORLM runs).

    Invalid (the candidate ⊥) when there is no Python block, the block was cut off by the
    token limit, it does not parse as Python, it imports no known solver package, or the
    provider's content filter stopped the answer (``finish_reason`` ``content_filter``).
    """
    if finish_reason == "content_filter":
        # The provider cut or withheld the answer: whatever is left is not the model's answer.
        return ParsedCandidate(text.strip() or None, None, None, False, "content_filter")
    code: str | None = None
    start = None
    for match in _FENCE.finditer(text):
        language = match.group(1).lower()
        body = match.group(2)
        if language in {"python", "py", "python3"} or (not language and _looks_like_python(body)):
            code, start = body, match.start()
            break
    if code is None:
        opened = _OPEN_FENCE.search(text)
        if opened is not None:
            formulation = text[: opened.start()].strip() or None
            reason = "truncated" if finish_reason == "length" else "unclosed_code_block"
            return ParsedCandidate(formulation, opened.group(2), None, False, reason)
        return ParsedCandidate(text.strip() or None, None, None, False, "no_code")
    formulation = text[:start].strip() or None
    # A block inside a markdown list item is indented as a whole: that is layout, not Python.
    code = textwrap.dedent(code).strip("\n")
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        return ParsedCandidate(formulation, code, None, False, f"syntax_error: line {error.lineno}")
    solver = detect_solver(tree)
    if solver is None:
        return ParsedCandidate(formulation, code, None, False, "no_solver_import")
    return ParsedCandidate(formulation, code, solver, True, None)


def detect_solver(tree: ast.AST) -> str | None:
    """The first known solver package the code imports, in import order."""
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in SOLVER_PACKAGES:
                return SOLVER_PACKAGES[top]
    return None


def _looks_like_python(body: str) -> bool:
    return bool(re.search(r"^\s*(import|from)\s+\w", body, re.MULTILINE))


def parse_score(text: str) -> float | None:
    """The review's score in 1..100: the last ``SCORE: n``; else a lone number; else None."""
    found = _SCORE.findall(text)
    if found:
        value = float(found[-1])
    else:
        stripped = text.strip()
        # A reply that is just a number (some models skip the label).
        if not re.fullmatch(r"[-+]?\d+(?:\.\d+)?(?:\s*/\s*100)?", stripped):
            return None
        value = float(re.split(r"\s*/", stripped)[0])
    return value if 1.0 <= value <= 100.0 else None


def normalized_score(score: float | None) -> float | None:
    """Map a 1..100 score to [0, 1]: (score − 1) / 99."""
    return None if score is None else (score - 1.0) / 99.0
