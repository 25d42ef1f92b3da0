"""Evaluator kinds, defined once: the rankings a portfolio can be assembled from.

An evaluator kind (the paper's "evaluator type") is one way to rank a problem's candidates.
Its name is the ``evaluator`` column of every assembled view and the ``--evaluator`` choice;
its label and colour are what pages and figures show; ``ranked_by`` names the *ranking source*,
the one score per candidate it ranks by, best first. Two sources exist, each computed both
by ``sql/rankings.sql`` and by the Python reference (``optfolio.portfolio.RANKING_SOURCES``):

* ``mean_score``: the mean of the LLM evaluator's sampled scores (none sampled: missing);
* ``p``: the generator probability p itself ("generator as evaluator").

Everything else is derived from :data:`EVALUATORS`: the :data:`Evaluator` type, the CLI's
choices, the ``evaluators`` table the SQL reads (``warehouse.register_parameters``), the
rows of the figures and the labels of the review page. A new kind ranking by an existing
source is one entry here; a new source also needs its score in ``sql/rankings.sql`` and in
``portfolio.RANKING_SOURCES`` (``tests/test_kinds.py`` fails until both have it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from optfolio.errors import InputError


@dataclass(frozen=True)
class EvaluatorKind:
    name: str
    label: str  # for figures and pages: "LLM evaluator"
    ranked_by: str  # the ranking source: "mean_score" or "p"
    color: str  # a matplotlib colour for its lines in the run's figures
    help: str  # what ranks it, for ``--evaluator`` help: "the LLM evaluator's mean score"


# In display order: figures draw the kinds' rows and lines in this order.
EVALUATORS: dict[str, EvaluatorKind] = {
    kind.name: kind
    for kind in (
        EvaluatorKind(
            name="llm",
            label="LLM evaluator",
            ranked_by="mean_score",
            color="tab:blue",
            help="the LLM evaluator's mean score",
        ),
        EvaluatorKind(
            name="generator",
            label="generator as evaluator",
            ranked_by="p",
            color="tab:green",
            help="the generator probability p itself",
        ),
    )
}

# Literal of a tuple is Literal of its items: pydantic and Prefect forms see every kind.
Evaluator = Literal[tuple(EVALUATORS)]
DEFAULT_EVALUATOR = "llm"


def evaluator_kind(name: str) -> EvaluatorKind:
    """The registered kind ``name``; any other name is refused, naming the registered ones."""
    kind = EVALUATORS.get(name)
    if kind is None:
        raise InputError(f"evaluator {name!r}: use one of {', '.join(EVALUATORS)}")
    return kind


def evaluator_help() -> str:
    """``--evaluator`` help: each kind's name and what ranks it."""
    return "Ranking: " + "; ".join(f"{kind.name} ({kind.help})" for kind in EVALUATORS.values())
