"""Reading input files strictly, and collecting every bad record before refusing the file.

A loader validates the *whole* file and raises one :class:`~optfolio.errors.InputError` that
lists the first few problems and how many there are in all, so a half-loaded dataset is never
used. Each message names the file, the record (line number, array position or id) and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optfolio.errors import InputError

MAX_DESCRIPTION_CHARS = 50_000
"""Longest accepted problem description. The longest in the shared benchmarks is ~2,200
characters; anything far beyond that is almost surely a wrong field or a runaway file, and it
would be copied into every generator, evaluator and judge prompt."""

MAX_ID_CHARS = 128
"""Longest accepted problem id (ids name store parts and appear in every table)."""

MAX_ERRORS_SHOWN = 10
"""How many bad records one error message lists before it just counts the rest."""


class RecordErrors:
    """Collects problems found in one file; :meth:`raise_if_any` refuses the file at the end."""

    def __init__(self, file: Path | str) -> None:
        self.file = file  # what the message names: a path, or "inline problems"
        self.messages: list[str] = []

    def add(self, record: str, field: str | None, problem: str) -> None:
        where = f"{record}, field {field!r}" if field else record
        self.messages.append(f"{where}: {problem}")

    def raise_if_any(self) -> None:
        if not self.messages:
            return
        shown = self.messages[:MAX_ERRORS_SHOWN]
        more = len(self.messages) - len(shown)
        lines = [f"{self.file}: {len(self.messages)} bad record(s):", *(f"  {m}" for m in shown)]
        if more:
            lines.append(f"  ... and {more} more")
        raise InputError("\n".join(lines))


# ---- whole files ---------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """The file's text, refusing missing, empty and non-UTF-8 files with a precise message."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return decode_text(path.read_bytes())
    except ValueError as error:
        raise InputError(f"{path}: {error}") from error


def decode_text(data: bytes) -> str:
    """UTF-8 text of a non-empty file; ``ValueError`` says where the first bad byte is."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"line {line}: not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start})"
        ) from error
    if not text.strip():
        raise ValueError("file is empty")
    # A byte-order mark is valid UTF-8 but not valid JSON; editors on Windows add it.
    return text.removeprefix("\ufeff")


def read_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
        ) from error


def read_json_array(path: Path) -> list[Any]:
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of problems, got {type(data).__name__}")
    if not data:
        raise InputError(f"{path}: file is empty (the JSON array holds no problems)")
    return data


def jsonl_objects(path: Path, errors: RecordErrors) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; other lines are reported, in order."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            errors.add(f"line {number}", None, f"invalid JSON: {error.msg} (column {error.colno})")
            continue
        if not isinstance(item, dict):
            errors.add(f"line {number}", None, f"expected an object, got {_type_name(item)}")
            continue
        yield number, item


MISSING: Any = object()
"""What :func:`required` returns for a missing key (already reported; validators skip it)."""


def required(item: dict[str, Any], key: str, errors: RecordErrors, record: str) -> Any:
    """The value under ``key``; a missing key is reported and gives :data:`MISSING`."""
    if key not in item:
        errors.add(record, key, "missing")
        return MISSING
    return item[key]


# ---- fields --------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def description(value: Any, errors: RecordErrors, record: str, field: str) -> str | None:
    """A non-empty string no longer than :data:`MAX_DESCRIPTION_CHARS`, or ``None`` (reported).

    Surrounding whitespace is stripped: a trailing newline in ``description.txt`` must not make
    the prompt (and so every candidate id) differ from the same text in a JSON file.
    """
    if value is MISSING:
        return None
    if not isinstance(value, str):
        errors.add(record, field, f"expected a string, got {_type_name(value)}")
        return None
    if not value.strip():
        errors.add(record, field, "empty description")
        return None
    if len(value) > MAX_DESCRIPTION_CHARS:
        errors.add(
            record,
            field,
            f"description has {len(value):,} characters (limit {MAX_DESCRIPTION_CHARS:,})",
        )
        return None
    return value.strip()


def record_id(value: Any, errors: RecordErrors, record: str, field: str) -> str | None:
    """A record's own id as text: a non-empty single-line string or an integer."""
    if value is MISSING:
        return None
    # bool is an int subclass; `true` as an id is a mistake, not the number 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        errors.add(record, field, f"expected a string or integer id, got {_type_name(value)}")
        return None
    if not value.strip() or value != value.strip():
        errors.add(record, field, f"id {value!r} is empty or has surrounding whitespace")
        return None
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        errors.add(
            record, field, f"id {value[:40]!r} is longer than {MAX_ID_CHARS} or not printable"
        )
        return None
    return value


def number(value: Any, errors: RecordErrors, record: str, field: str) -> float | None:
    """A finite number, given as a JSON number or a numeric string (as the benchmarks do)."""
    if value is MISSING:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        errors.add(record, field, f"expected a number, got {_type_name(value)}")
        return None
    try:
        result = float(value)
    except ValueError:
        errors.add(record, field, f"expected a number, got {value!r}")
        return None
    if not math.isfinite(result):
        errors.add(record, field, f"objective must be finite, got {value!r}")
        return None
    return result


def solution_json(value: Any, errors: RecordErrors, record: str, field: str) -> str | None:
    """``solution_truth`` text: compact JSON, key order kept; ``None`` for JSON null."""
    if value is None:
        return None
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # Python's json reads NaN/Infinity tokens, but they are not JSON and break readers.
        errors.add(record, field, "holds NaN or Infinity")
        return None
