"""The output protocol between candidate code and the pipeline.

The generation prompt asks every candidate to end by printing two lines::

    STATUS: <the solver's status text, e.g. Optimal, Infeasible>
    OBJECTIVE: <the optimal objective value as a number>

Rules (``parse_output`` implements exactly these):

* one key per line, at the start of the line (leading spaces allowed), followed by ``:`` or
  ``=``; the key is case-insensitive (``Status:``, ``objective =`` also count);
* when a key appears several times, the last occurrence wins;
* the status is the rest of the line, stripped (empty → no status);
* the objective is the first number on the rest of the line: integers, decimals, exponents
  (``1.5e3``), signs (``-0``), ``inf``/``-inf``/``infinity`` are read as numbers; ``nan``, an
  empty or non-numeric value give no objective (null), as does anything not finite-or-infinite;
* without protocol lines, a best-effort fallback reads what solver packages commonly print:
  PuLP's ``Status: Optimal`` and ``Objective value: 12``, ``Optimal value: 12``,
  ``Optimal objective: 12``, ``Total cost = 12``, ``Total profit: 12``, ``Objective: 12``, and
  HiGHS' ``Model status : Optimal`` / ``Objective value : 12``. Protocol lines always win.
"""

from __future__ import annotations

import math
import re

_NUMBER = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|inf(?:inity)?|nan)"
_NUMBER_RE = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w.])", re.IGNORECASE)

_STATUS_RE = re.compile(r"^\s*STATUS\s*[:=]\s*(?P<value>.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_OBJECTIVE_RE = re.compile(
    r"^\s*OBJECTIVE\s*[:=]\s*(?P<value>.*?)\s*$", re.IGNORECASE | re.MULTILINE
)

# Fallbacks, in order of trust: the first pattern with a match decides (its last match wins).
_FALLBACK_STATUS = (
    re.compile(
        r"^\s*(?:model|solver|solution|optimization)\s+status\s*[:=]\s*(?P<value>.*?)\s*$",
        re.IGNORECASE | re.MULTILINE,
    ),
)
_FALLBACK_OBJECTIVE = (
    re.compile(
        r"^\s*(?:optimal\s+)?objective(?:\s+function)?(?:\s+value)?\s*[:=]\s*(?P<value>.*)$",
        re.IGNORECASE | re.MULTILINE,
    ),
    re.compile(
        r"^\s*optimal\s+(?:value|cost|profit|solution\s+value)\s*[:=]\s*(?P<value>.*)$",
        re.IGNORECASE | re.MULTILINE,
    ),
    re.compile(
        r"^\s*(?:total|minimum|maximum|min|max|best)\s+"
        r"(?:cost|profit|value|revenue|objective)s?\b[^:=\n]*[:=]\s*(?P<value>.*)$",
        re.IGNORECASE | re.MULTILINE,
    ),
)


def parse_number(text: str) -> float | None:
    """The first number in ``text``; None for none, for NaN."""
    match = _NUMBER_RE.search(text.replace(",", "") if _is_thousands(text) else text)
    if match is None:
        return None
    value = float(match.group(0))
    return None if math.isnan(value) else value


def _is_thousands(text: str) -> bool:
    # "1,234.5" is one number; "1, 2" is a list whose first number is 1.
    return re.search(r"\d,\d{3}(?!\d)", text) is not None


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    values = [match.group("value") for match in pattern.finditer(text)]
    return values[-1] if values else None


def parse_output(stdout: str) -> tuple[str | None, float | None]:
    """(solver_status, objective) from a candidate's stdout, per the rules above."""
    status = _last(_STATUS_RE, stdout)
    objective_text = _last(_OBJECTIVE_RE, stdout)
    if status is None:
        for pattern in _FALLBACK_STATUS:
            status = _last(pattern, stdout)
            if status is not None:
                break
    if objective_text is None:
        for pattern in _FALLBACK_OBJECTIVE:
            objective_text = _last(pattern, stdout)
            if objective_text is not None:
                break
    objective = parse_number(objective_text) if objective_text is not None else None
    return (status.strip() or None) if status is not None else None, objective
