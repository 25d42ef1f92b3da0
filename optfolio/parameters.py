"""What every flow's parameter model shares: how a field appears on the command line, how a
bad value becomes one clear error, and the α grids the defaults are made of.

Each flow takes one typed pydantic model (``PortfolioRunParameters``, ``SimulationParameters``,
``ReviewParameters``); its fields are the only place a default, a bound or a help text lives.
The Prefect UI form is the model's JSON schema, the deployments in ``deployments/prefect.yaml``
are validated against it (tests), and the CLI derives its options from the fields
(``cli/options.py``), reading the :class:`Cli` annotation where a field's option differs from
the default rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from optfolio.errors import InputError

ALPHA_STEP = 0.02

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Cli:
    """How a model field appears on the command line, where it differs from the rule: a field
    ``eval_samples`` is the option ``--eval-samples``; a list is typed comma-separated; the
    fields of a nested model are options prefixed with the field's name (``--sandbox-…``).

    Use as ``Annotated[type, Cli(...)]`` on the field."""

    flag: str | None = None  # the option's whole name, e.g. "--K" or "--timeout"
    prefix: str | None = None  # a nested model: its fields' prefix ("" for none)
    envvar: str | None = None  # an environment variable that overrides the default
    # No option of its own: the command sets the field from options that are not fields
    # (the inline ``problems`` list comes from ``--problem`` / ``--problem-file``).
    command_sets: bool = False


def parse_model(model: type[Model], values: dict[str, object]) -> Model:
    """Build and validate MODEL; a bad value becomes one InputError naming the field."""
    try:
        return model(**values)
    except ValidationError as error:
        raise InputError(validation_message(error)) from None


def validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{f'parameter {where}' if where else 'parameters'}: {first['msg']}{more}"


def closed_alpha_grid(step: float = ALPHA_STEP) -> list[float]:
    """α in [0, 1]: 0, step, 2·step, …, 1, each the double nearest i·step (no drift)."""
    count = round(1 / step)
    if count < 1 or abs(count * step - 1) > 1e-9:
        raise InputError(f"alpha step {step!r} does not divide 1")
    return [i / count for i in range(count + 1)]


def open_alpha_grid(step: float = ALPHA_STEP) -> list[float]:
    """α in (0, 1): the closed grid without its ends (a portfolio run's own grid, where α = 0
    would hold every candidate and α = 1 none)."""
    return closed_alpha_grid(step)[1:-1]
