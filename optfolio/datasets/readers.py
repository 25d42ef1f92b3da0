"""One reader per dataset kind: a file (or folder) in, validated problem records out.

Readers report bad records to a :class:`RecordErrors` and skip them; the caller refuses the
file when any were reported. Record references in messages and in ``source`` are the ones a
person would look up: array position and ``index`` (JSON arrays), line number and id (JSONL),
folder name (NLP4LP).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optfolio.datasets import validation as check
from optfolio.datasets.ground_truth import objective_label
from optfolio.datasets.validation import RecordErrors
from optfolio.errors import InputError


@dataclass(frozen=True)
class ProblemRecord:
    record_id: str  # the record's own id in its file (``index``, ``id``, folder name)
    problem_id: str
    description: str
    objective_truth: float | None
    solution_truth: str | None
    source: str  # "<file>#<record>"
    where: str  # how error messages name the record


def _prefixed(kind: str, record_id: str) -> str:
    return f"{kind}-{record_id}"


# ---- NL4Opt-E and OptiBench: one JSON array, ground truth in a `results` dict ----------------


def read_results_array(path: Path, kind: str, errors: RecordErrors) -> list[ProblemRecord]:
    """``[{"index": int, "question": str, "results": {label: value}}, ...]`` (ReSocratic)."""
    records = []
    for position, item in enumerate(check.read_json_array(path)):
        where = f"record [{position}]"
        if not isinstance(item, dict):
            errors.add(where, None, f"expected an object, got {type(item).__name__}")
            continue
        if "index" in item:
            where = f"record [{position}] (index {item['index']!r})"
        record_id = check.record_id(
            check.required(item, "index", errors, where), errors, where, "index"
        )
        question = check.required(item, "question", errors, where)
        text = check.description(question, errors, where, "question")
        results = check.required(item, "results", errors, where)
        objective, solution = _results_truth(results, errors, where)
        if record_id is None or text is None or solution is None:
            continue
        records.append(
            ProblemRecord(
                record_id=record_id,
                problem_id=_prefixed(kind, record_id),
                description=text,
                objective_truth=objective,
                solution_truth=solution,
                source=f"{path}#{position}",
                where=where,
            )
        )
    return records


def _results_truth(
    results: Any, errors: RecordErrors, where: str
) -> tuple[float | None, str | None]:
    """(objective by the ground-truth rule, the whole dict as JSON); (None, None) if bad."""
    if results is check.MISSING:
        return None, None
    if not isinstance(results, dict) or not results:
        errors.add(where, "results", "expected a non-empty object of label -> value")
        return None, None
    solution = check.solution_json(results, errors, where, "results")
    label = objective_label(list(results))
    if label is None:
        return None, solution
    objective = check.number(results[label], errors, where, f"results[{json.dumps(label)}]")
    return (objective, solution) if objective is not None else (None, None)


# ---- MAMO: JSON Lines, objective in `Answer` ------------------------------------------------


def read_mamo(path: Path, kind: str, errors: RecordErrors) -> list[ProblemRecord]:
    """``{"id": int, "Question": str, "Answer": "<number>", ...}`` per line."""
    records = []
    for line, item in check.jsonl_objects(path, errors):
        where = f"line {line}"
        if "id" in item:
            where = f"line {line} (id {item['id']!r})"
        record_id = check.record_id(check.required(item, "id", errors, where), errors, where, "id")
        question = check.required(item, "Question", errors, where)
        text = check.description(question, errors, where, "Question")
        answer = check.required(item, "Answer", errors, where)
        objective = check.number(answer, errors, where, "Answer")
        if record_id is None or text is None or objective is None:
            continue
        records.append(
            ProblemRecord(
                record_id=record_id,
                problem_id=_prefixed(kind, record_id),
                description=text,
                objective_truth=objective,
                solution_truth=None,  # MAMO gives the optimal value only
                source=f"{path}#{line}",
                where=where,
            )
        )
    return records


# ---- generic JSON Lines ---------------------------------------------------------------------


def read_generic_jsonl(path: Path, kind: str, errors: RecordErrors) -> list[ProblemRecord]:
    """``{"id", "description", "objective"?: number|null, "solution"?: any JSON}`` per line.

    The ``id`` is the problem id as given (no prefix): the user chose it. Other fields are
    ignored, so a file can carry its own provenance.
    """
    records = []
    for line, item in check.jsonl_objects(path, errors):
        record = generic_record(item, f"line {line}", f"{path}#{line}", errors)
        if record is not None:
            records.append(record)
    return records


def generic_record(
    item: dict[str, Any], position: str, source: str, errors: RecordErrors
) -> ProblemRecord | None:
    """One generic record (a JSONL line, an inline problem) at POSITION ("line 3"), or
    ``None`` when it is bad (reported)."""
    where = f"{position} (id {item['id']!r})" if "id" in item else position
    record_id = check.record_id(check.required(item, "id", errors, where), errors, where, "id")
    given = check.required(item, "description", errors, where)
    text = check.description(given, errors, where, "description")
    objective, objective_ok = _optional_objective(item.get("objective"), errors, where)
    solution = check.solution_json(item.get("solution"), errors, where, "solution")
    solution_ok = item.get("solution") is None or solution is not None
    if record_id is None or text is None or not objective_ok or not solution_ok:
        return None
    return ProblemRecord(
        record_id=record_id,
        problem_id=record_id,
        description=text,
        objective_truth=objective,
        solution_truth=solution,
        source=source,
        where=where,
    )


def _optional_objective(value: Any, errors: RecordErrors, where: str) -> tuple[float | None, bool]:
    """(objective, valid): absent or null is fine; otherwise a finite JSON number."""
    if value is None:
        return None, True
    # Strictly a JSON number here: the generic format is ours, so "12" is a mistake to show.
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.add(where, "objective", f"expected a number or null, got {type(value).__name__}")
        return None, False
    objective = check.number(value, errors, where, "objective")
    return objective, objective is not None


# ---- NLP4LP: one folder per problem ---------------------------------------------------------


def read_nlp4lp(path: Path, kind: str, errors: RecordErrors) -> list[ProblemRecord]:
    """``<path>/problems/<id>/description.txt`` and optional ``solution.json``.

    ``path`` may be the dataset folder (holding ``problems/``) or ``problems/`` itself. The
    derived ``nlp4lp_index.jsonl`` is not read: the folders are the source. A problem without
    ``solution.json`` loads with unknown ground truth (a user's own problems in this layout).
    """
    root = path / "problems" if (path / "problems").is_dir() else path
    if not root.is_dir():
        raise InputError(f"{path}: no such folder (NLP4LP expects problems/<id>/description.txt)")
    folders = sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=_natural_key,
    )
    if not folders:
        raise InputError(f"{root}: folder is empty (no problem folders)")
    records = []
    for folder in folders:
        where = f"problem {folder.name!r}"
        record_id = check.record_id(folder.name, errors, where, "folder name")
        text = _nlp4lp_description(folder / "description.txt", errors, where)
        objective, solution, ok = _nlp4lp_solution(folder / "solution.json", errors, where)
        if record_id is None or text is None or not ok:
            continue
        records.append(
            ProblemRecord(
                record_id=record_id,
                problem_id=_prefixed(kind, record_id),
                description=text,
                objective_truth=objective,
                solution_truth=solution,
                source=f"{root}#{folder.name}",
                where=where,
            )
        )
    return records


def _natural_key(entry: Path) -> tuple[int, int, str]:
    # Numeric folder names in numeric order (2 before 10), then the others by name.
    return (0, int(entry.name), "") if entry.name.isdigit() else (1, 0, entry.name)


def _nlp4lp_description(file: Path, errors: RecordErrors, where: str) -> str | None:
    if not file.is_file():
        errors.add(where, file.name, "missing")
        return None
    try:
        text = check.decode_text(file.read_bytes())
    except ValueError as error:
        errors.add(where, file.name, str(error))
        return None
    return check.description(text, errors, where, file.name)


def _nlp4lp_solution(
    file: Path, errors: RecordErrors, where: str
) -> tuple[float | None, str | None, bool]:
    """(objective, solution JSON, valid) from ``solution.json`` when the problem has one."""
    if not file.exists():
        return None, None, True
    try:
        solution = check.read_json(file)
    except InputError as error:
        errors.add(where, file.name, str(error).removeprefix(f"{file}: "))
        return None, None, False
    if not isinstance(solution, dict):
        errors.add(where, file.name, f"expected an object, got {type(solution).__name__}")
        return None, None, False
    if "objective" not in solution:
        errors.add(where, f"{file.name}: objective", "missing")
        return None, None, False
    objective = check.number(solution["objective"], errors, where, f"{file.name}: objective")
    text = check.solution_json(solution, errors, where, file.name)
    return (
        (objective, text, True)
        if objective is not None and text is not None
        else (None, None, False)
    )
