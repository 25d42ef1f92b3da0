"""Which value of a ``results`` dict is the optimal objective (NL4Opt-E and OptiBench).

ReSocratic's files give no objective field: ``results`` maps free-text labels to the values a
question asks for, variables and objective alike. The rule, applied to the labels in order:

1. A label *names an optimum* if it contains a word starting with ``maxim``/``minim``, the word
   ``max``/``min``, or ``objective`` ("Maximized Profit", "The minimum cost of making the
   container", "Objective Value (Profit Rate)", "Total number of shifts minimized to").
   If exactly one label does, its value is the objective.
2. If several do, keep those that *start* with such a word (ignoring a leading "The"/"New"):
   "The height of the box that gives maximum volume" describes a variable, "The maximum volume
   of the box" the objective. Exactly one must remain; two (OptiBench's two-part questions with
   "The maximum profit" and "New maximum profit") leave the objective unknown.
3. If none does, the last label counts when it starts with "Total"/"The total": these are the
   "minimize the total number of …" questions ("Total Number of Trips", "The total cost").
4. Otherwise the objective is unknown (``None``): the question asks for variables, ratios or
   yes/no decisions ("Whether a fire station should be built in City 6"). The whole dict stays
   in ``solution_truth``, so candidates can still be compared value by value.

We never guess beyond this: a wrong ground truth silently corrupts every correctness figure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_OPTIMUM_WORD = r"(?:maxim\w*|minim\w*|max|min|objective)\b"
_NAMES_OPTIMUM = re.compile(rf"\b{_OPTIMUM_WORD}", re.IGNORECASE)
_STARTS_WITH_OPTIMUM = re.compile(rf"^(?:(?:the|new)\s+)*{_OPTIMUM_WORD}", re.IGNORECASE)
_STARTS_WITH_TOTAL = re.compile(r"^(?:the\s+)?total\b", re.IGNORECASE)


def objective_label(labels: Sequence[str]) -> str | None:
    """The label whose value is the optimal objective, or ``None`` when it is not one number."""
    naming = [label for label in labels if _NAMES_OPTIMUM.search(label.strip())]
    if len(naming) == 1:
        return naming[0]
    if len(naming) > 1:
        leading = [label for label in naming if _STARTS_WITH_OPTIMUM.search(label.strip())]
        return leading[0] if len(leading) == 1 else None
    if labels and _STARTS_WITH_TOTAL.search(labels[-1].strip()):
        return labels[-1]
    return None
