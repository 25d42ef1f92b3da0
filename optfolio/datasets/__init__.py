"""Benchmark datasets in, the ``problems`` table (``optfolio.schemas.PROBLEMS``) out.

Kinds (see the README's "Datasets" section for fields and the ground-truth rule of each):

- ``nlp4lp``: NLP4LP folders, ``problems/<id>/description.txt`` + ``solution.json``;
- ``nl4opt``: NL4Opt-E JSON (ReSocratic), ground truth in a ``results`` dict;
- ``mamo``: MAMO JSON Lines, ground truth in ``Answer``;
- ``optibench``: OptiBench JSON (ReSocratic), ground truth in a ``results`` dict;
- ``jsonl``: generic JSON Lines, ``id``, ``description``, optional ``objective``, ``solution``.

Problems can also come with the run itself (:func:`inline_problems`: the UI form's list,
``optfolio run --problem``): validated as ``jsonl`` records are, ``dataset`` ``inline``.

Problem ids are ``<kind>-<record id>`` (``nl4opt-17``) except for ``jsonl`` and inline
problems, whose ``id`` is used as given. ``source`` is ``<path>#<record>``: the array position
(JSON arrays), the line number (JSONL) or the folder name (NLP4LP); ``inline#<i>`` for the
i-th inline problem. Every record is validated before anything is returned; a bad file raises
one :class:`~optfolio.errors.InputError` naming the file, the records and the fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from optfolio.datasets.ground_truth import objective_label
from optfolio.datasets.readers import (
    ProblemRecord,
    generic_record,
    read_generic_jsonl,
    read_mamo,
    read_nlp4lp,
    read_results_array,
)
from optfolio.datasets.validation import MAX_DESCRIPTION_CHARS, RecordErrors
from optfolio.errors import InputError
from optfolio.schemas import PROBLEMS

__all__ = [
    "INLINE",
    "KINDS",
    "MAX_DESCRIPTION_CHARS",
    "DatasetKind",
    "inline_problems",
    "load_problems",
    "objective_label",
    "sample_dataset_path",
    "select_problems",
]

Reader = Callable[[Path, str, RecordErrors], list[ProblemRecord]]

# The dataset kinds, each with its reader: the one list of them. ``DatasetKind`` (the run's
# ``dataset`` parameter, the Prefect form's choices) and ``--dataset`` help derive from it.
KINDS: dict[str, Reader] = {
    "jsonl": read_generic_jsonl,
    "nlp4lp": read_nlp4lp,
    "nl4opt": read_results_array,
    "mamo": read_mamo,
    "optibench": read_results_array,
}
# Literal of a tuple is Literal of its items: pydantic and Prefect forms see every kind.
DatasetKind = Literal[tuple(KINDS)]

INLINE = "inline"
"""The ``dataset`` of problems given with the run rather than in a file."""


def sample_dataset_path() -> Path:
    """The shipped sample (NL4Opt-E problems, kind ``jsonl``), inside the installed package."""
    return Path(str(resources.files("optfolio") / "data" / "sample" / "problems.jsonl"))


def load_problems(
    kind: str,
    path: str | os.PathLike[str],
    limit: int | None = None,
    ids: Iterable[str] | None = None,
) -> pa.Table:
    """Validate the whole dataset, then return the selected problems in file order.

    ``ids`` selects by problem id (``nl4opt-17``) or by the record's own id (``17``); an
    unknown id is an error. ``limit`` keeps the first ``limit`` problems of the selection.
    """
    if kind not in KINDS:
        raise InputError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    _check_limit(limit)
    file = Path(path)
    errors = RecordErrors(file)
    records = KINDS[kind](file, kind, errors)
    _check_unique(records, errors)
    errors.raise_if_any()
    return _table(kind, _selection(records, file, limit, ids))


def inline_problems(
    problems: Sequence[Mapping[str, Any]],
    limit: int | None = None,
    ids: Iterable[str] | None = None,
) -> pa.Table:
    """The problems given with the run (``id``, ``description``, optional ``objective``, as a
    ``jsonl`` record), validated as a ``jsonl`` file is; selected as :func:`load_problems`
    selects."""
    _check_limit(limit)
    if not problems:
        raise InputError(f"{INLINE} problems: the list is empty")
    errors = RecordErrors(f"{INLINE} problems")
    records = []
    for index, item in enumerate(problems):
        record = generic_record(dict(item), f"problems[{index}]", f"{INLINE}#{index}", errors)
        if record is not None:
            records.append(record)
    _check_unique(records, errors)
    errors.raise_if_any()
    return _table(INLINE, _selection(records, errors.file, limit, ids))


def select_problems(
    kind: str,
    path: str | os.PathLike[str] | None,
    inline: Sequence[Mapping[str, Any]] | None,
    limit: int | None = None,
    ids: Iterable[str] | None = None,
) -> pa.Table:
    """A run's problems: the INLINE ones when given, else the dataset at PATH (empty: the
    shipped sample)."""
    if inline is not None:
        return inline_problems(inline, limit=limit, ids=ids)
    return load_problems(kind, path or sample_dataset_path(), limit=limit, ids=ids)


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer, got {limit!r}")


def _selection(
    records: list[ProblemRecord],
    origin: Path | str,
    limit: int | None,
    ids: Iterable[str] | None,
) -> list[ProblemRecord]:
    if ids is not None:
        # A bare string is one id, not an iterable of one-character ids.
        wanted = [ids] if isinstance(ids, str) else list(ids)
        if not wanted:
            raise InputError(f"{origin}: no problem ids given (ids is empty)")
        records = _select(records, wanted, origin)
    return records if limit is None else records[:limit]


def _table(kind: str, records: list[ProblemRecord]) -> pa.Table:
    rows = [
        {
            "problem_id": r.problem_id,
            "dataset": kind,
            "description": r.description,
            "objective_truth": r.objective_truth,
            "solution_truth": r.solution_truth,
            "source": r.source,
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=PROBLEMS)


def _check_unique(records: list[ProblemRecord], errors: RecordErrors) -> None:
    first_seen: dict[str, ProblemRecord] = {}
    for record in records:
        earlier = first_seen.setdefault(record.problem_id, record)
        if earlier is not record:
            errors.add(
                record.where, None, f"duplicate id {record.record_id!r} (also {earlier.where})"
            )


def _select(
    records: list[ProblemRecord], wanted: list[str], origin: Path | str
) -> list[ProblemRecord]:
    by_name: dict[str, ProblemRecord] = {}
    for record in records:
        by_name.setdefault(record.record_id, record)
    # Problem ids win over record ids: in jsonl a record id can look like another's problem id.
    by_name.update({record.problem_id: record for record in records})
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise InputError(f"{origin}: no problem with id {shown}{more}")
    chosen = {by_name[name].problem_id for name in wanted}
    return [record for record in records if record.problem_id in chosen]
