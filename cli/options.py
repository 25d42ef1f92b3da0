"""Command-line options derived from a flow's parameter model, so that the CLI, the Prefect UI
form (the model's JSON schema) and the deployments cannot drift apart.

Every field is an option: ``eval_samples`` is ``--eval-samples``, with the field's default and
its description as the help; a list is typed comma-separated (``--K 10,20``); the fields of a
nested model are options prefixed with the field's name (``--sandbox-parallelism``). A
``Cli`` annotation on the field (``optfolio.parameters.Cli``) names the option where it
differs (``--K``, ``--timeout``), drops the prefix, or reads an environment variable. Fields
that end up with the same option name (the three roles' ``--model``) become one option that
sets all of them.

Values are not checked here: the model validates them, so a bad one is refused by the same
message from the CLI, the form and the API.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from optfolio.errors import InputError
from optfolio.parameters import Cli, parse_model
from optfolio.settings import default_store_root

if typing.TYPE_CHECKING:
    from optfolio.store import RunStore

# The options every command over an existing store shares (sql, warehouse, runs, review).
StoreOption = Annotated[
    str | None,
    typer.Option(
        help="Store root, a directory or file:// URI (default $OPTFOLIO_STORE or ./store)."
    ),
]
RunIdsOption = Annotated[list[str] | None, typer.Option("--run", help="Only these run ids.")]


def existing_store(store: str | None) -> RunStore:
    """The store at STORE (default ``$OPTFOLIO_STORE`` or ``./store``), refused naming
    ``--store`` when it is no directory."""
    from optfolio.store import RunStore  # here: importing the store slows every CLI start

    run_store = RunStore(store or default_store_root())
    if not run_store.root.is_dir():
        raise InputError(f"--store {run_store.root}: no such directory")
    return run_store


SCALARS = (bool, int, float, str)
LONG_DEFAULT_ITEMS = 8  # a longer list default is shown shortened in the help


@dataclass(frozen=True)
class ModelOption:
    """One option: the field(s) it sets, by path from the model's top."""

    flag: str  # "--eval-samples"
    paths: tuple[tuple[str, ...], ...]  # ("sandbox", "timeout_s"), one per field it sets
    field: FieldInfo
    annotation: Any  # the field's type, e.g. list[int] | None
    default: Any  # the field's default (PydanticUndefined: required)
    envvar: str | None = None

    @property
    def name(self) -> str:
        """The parameter's name in the generated command."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def required(self) -> bool:
        return self.default is PydanticUndefined

    @property
    def item_type(self) -> type | None:
        """For a list field, the type of its items (Literals are strings); else None."""
        base = _without_none(self.annotation)
        if typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            return _scalar(item)
        return None

    @property
    def help(self) -> str:
        text = self.field.description or ""
        choices = _literal_choices(_without_none(self.annotation))
        if choices and not all(re.search(rf"\b{re.escape(c)}\b", text) for c in choices):
            text += f" ({' | '.join(choices)})"
        if self.item_type is not None:
            text += ", comma-separated"
        if len(self.paths) > 1:
            owners = [path[-2] for path in self.paths]
            text += f"; for the {', '.join(owners[:-1])} and {owners[-1]}"
        return text

    def cli_type(self) -> Any:
        if self.item_type is not None:
            return str | None if self.default is None else str
        base = _scalar(_without_none(self.annotation))
        return base | None if _allows_none(self.annotation) else base

    def cli_default(self) -> Any:
        """The default as the CLI takes it (a list comma-separated)."""
        if self.required or self.default is None or self.item_type is None:
            return ... if self.required else self.default
        return ",".join(_format(value) for value in self.default)

    def shown_default(self) -> str | bool:
        default = self.cli_default()
        if isinstance(self.default, list) and len(self.default) > LONG_DEFAULT_ITEMS:
            items = [_format(value) for value in self.default]
            return f"{items[0]},{items[1]},…,{items[-1]}"
        return default is not ...

    def from_cli(self, value: Any) -> Any:
        """The CLI's value as the model takes it: a comma-separated text split into items."""
        item = self.item_type
        if item is None or value is None:
            return value
        parts = [part.strip() for part in str(value).split(",") if part.strip()]
        if not parts and self.default is None:
            return None  # "--ids ''": none given
        try:
            return [item(part) for part in parts]
        except ValueError as error:
            raise InputError(f"{self.flag} {value!r}: {error}") from None

    def typer_option(self) -> Any:
        """``typer.Option(default, "--flag", help=...)`` (the default-value style)."""
        return typer.Option(
            self.cli_default(),
            self.flag,
            help=self.help,
            envvar=self.envvar,
            show_default=self.shown_default(),
        )

    def parameter(self) -> inspect.Parameter:
        """The generated command's parameter (typer reads its Annotated type and default)."""
        option = typer.Option(
            self.flag, help=self.help, envvar=self.envvar, show_default=self.shown_default()
        )
        default = self.cli_default()
        return inspect.Parameter(
            self.name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[self.cli_type(), option],
            default=inspect.Parameter.empty if default is ... else default,
        )


def model_options(model: type[BaseModel]) -> list[ModelOption]:
    """The options of MODEL's fields (nested models flattened), in field order."""
    found: dict[str, ModelOption] = {}
    for option in _field_options(model, _defaults(model), "", ()):
        same = found.get(option.flag)
        if same is None:
            found[option.flag] = option
            continue
        if (same.default, same.annotation) != (option.default, option.annotation):
            raise TypeError(f"{option.flag}: fields {same.paths} and {option.paths} differ")
        found[option.flag] = ModelOption(
            same.flag, same.paths + option.paths, same.field, same.annotation, same.default
        )
    return list(found.values())


def model_option(model: type[BaseModel], field: str) -> Any:
    """One field's option for a hand-written command: ``param: type = model_option(M, "f")``."""
    [option] = [o for o in model_options(model) if o.paths == ((field,),)]
    return option.typer_option()


def model_values(options: Sequence[ModelOption], values: dict[str, Any]) -> dict[str, Any]:
    """The model's (nested) values from the command's, by option name."""
    nested: dict[str, Any] = {}
    for option in options:
        value = option.from_cli(values[option.name])
        for path in option.paths:
            target = nested
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = value
    return nested


def model_command(
    model: type[BaseModel],
    body: Callable[..., None],
    extra: Sequence[inspect.Parameter] = (),
) -> Callable[..., None]:
    """A typer command with an option per field of MODEL plus EXTRA; it validates the options
    into one MODEL and calls ``body(parameters, **extra)``. BODY's docstring is the help."""
    options = model_options(model)
    names = [o.name for o in options] + [p.name for p in extra]
    if len(set(names)) != len(names):
        raise TypeError(f"{model.__name__}: two options of the same name in {names}")

    def command(**values: Any) -> None:
        given = {option.name: values.pop(option.name) for option in options}
        body(parse_model(model, model_values(options, given)), **values)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*(option.parameter() for option in options), *extra]
    )
    command.__name__ = body.__name__
    command.__doc__ = body.__doc__
    return command


def extra_option(name: str, annotation: Any, default: Any, help: str) -> inspect.Parameter:
    """An option of a generated command that is not a model field (``--verbose``)."""
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[annotation, typer.Option(help=help)],
        default=default,
    )


# ---- the fields ----------------------------------------------------------------------------


def _field_options(
    model: type[BaseModel], defaults: Any, prefix: str, path: tuple[str, ...]
) -> list[ModelOption]:
    options = []
    for name, field in model.model_fields.items():
        cli = next((m for m in field.metadata if isinstance(m, Cli)), Cli())
        if cli.command_sets:
            continue
        default = getattr(defaults, name, PydanticUndefined)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            inner = f"{name.replace('_', '-')}-" if cli.prefix is None else cli.prefix
            options += _field_options(annotation, default, prefix + inner, (*path, name))
            continue
        _check_supported(model, name, annotation)
        flag = cli.flag or f"--{prefix}{name.replace('_', '-')}"
        options.append(ModelOption(flag, ((*path, name),), field, annotation, default, cli.envvar))
    return options


def _defaults(model: type[BaseModel]) -> Any:
    """An object holding MODEL's defaults as attributes (required fields missing)."""
    values = {
        name: field.get_default(call_default_factory=True)
        for name, field in model.model_fields.items()
        if not field.is_required()
    }
    return model.model_construct(**values)


def _check_supported(model: type[BaseModel], name: str, annotation: Any) -> None:
    base = _without_none(annotation)
    if typing.get_origin(base) is list:
        (base,) = typing.get_args(base)
    if _scalar(base) not in SCALARS:
        raise TypeError(f"{model.__name__}.{name}: no CLI option for type {annotation!r}")


def _without_none(annotation: Any) -> Any:
    if _is_union(annotation):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _allows_none(annotation: Any) -> bool:
    return _is_union(annotation) and type(None) in typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _scalar(annotation: Any) -> Any:
    """A Literal's values are typed as their type (str); other types as they are."""
    if typing.get_origin(annotation) is Literal:
        return type(typing.get_args(annotation)[0])
    return annotation


def _literal_choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return [str(choice) for choice in typing.get_args(annotation)]
    return []


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
