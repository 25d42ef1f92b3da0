"""One source for every setting: each flow's typed parameter model holds every default, bound
and help text, and the CLI options, the Prefect form and the deployments are derived from it
(or checked against it), so none of them can drift."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import typer.main
import yaml
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from cli import app
from cli.options import model_command, model_options
from optfolio.errors import InputError
from optfolio.parameters import Cli, closed_alpha_grid, open_alpha_grid
from optfolio.review import ReviewParameters
from optfolio.run_config import (
    ModelEndpoint,
    PortfolioRunParameters,
    SandboxSettings,
    parse_parameters,
)
from optfolio.settings import REPO_ROOT
from optfolio.simulation import SimulationParameters
from optfolio.warehouse import AssemblySettings
from sandbox import limits

# The options people and scripts already use (README): derived options may add, never rename.
CONTRACT = {
    ("run",): (
        "--dataset --path --limit --ids --candidates --eval-samples --judge-samples --store"
        " --run-id --model --base-url --generator-max-tokens --concurrency --timeout --seed"
        " --task-runner --dask-address --verbose --problem --problem-file --objective"
    ),
    ("simulate",): "--out --K --seeds --generators --errors --alpha-step",
    ("review", "show"): "--run --store --alpha --evaluator --problem --full",
    ("review", "decide"): (
        "--run --problem --choose --reject --comment --reviewer --store --alpha --evaluator"
    ),
    ("review", "list"): "--store --run --json",
}
# Fields without an option of their own -> the options the command sets them from.
COMMAND_SET_BY = {("problems",): {"--problem", "--problem-file", "--objective", "--problem-id"}}
FLOW_MODELS: dict[str, type[BaseModel]] = {
    "flows/portfolio_run.py:portfolio_run": PortfolioRunParameters,
    "flows/simulate.py:simulate": SimulationParameters,
    "flows/review.py:review": ReviewParameters,
}


def command(*path: str) -> click.Command:
    found: Any = typer.main.get_command(app)
    for name in path:
        found = found.commands[name]
    return found


def options_of(*path: str) -> dict[str, click.Option]:
    return {flag: p for p in command(*path).params for flag in p.opts if flag.startswith("--")}


def leaves(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field of MODEL, nested models' fields by their path."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += leaves(annotation, (*path, name))
        else:
            found.append((*path, name))
    return found


def command_set(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """MODEL's fields that the command sets from options of its own (no option each)."""
    return [
        (name,)
        for name, field in model.model_fields.items()
        if any(isinstance(m, Cli) and m.command_sets for m in field.metadata)
    ]


def value_at(instance: BaseModel, path: tuple[str, ...]) -> Any:
    for name in path:
        instance = getattr(instance, name)
    return instance


@pytest.mark.parametrize("path", sorted(CONTRACT))
def test_existing_options_keep_their_names(path: tuple[str, ...]) -> None:
    assert set(CONTRACT[path].split()) <= set(options_of(*path))


@pytest.mark.parametrize(
    ("path", "model"), [(("run",), PortfolioRunParameters), (("simulate",), SimulationParameters)]
)
def test_every_field_is_an_option_with_its_default_and_description(
    path: tuple[str, ...], model: type[BaseModel]
) -> None:
    cli_options = options_of(*path)
    derived = model_options(model)
    optioned = [leaf for leaf in leaves(model) if leaf not in command_set(model)]
    assert sorted(p for option in derived for p in option.paths) == sorted(optioned)
    # Each field the command sets has options of the command's own instead.
    for field in command_set(model):
        assert COMMAND_SET_BY[field] <= set(cli_options), field
    # The declared defaults: a validator may resolve one (judge_samples: the evaluator's m).
    defaults = model.model_construct()
    for option in derived:
        param = cli_options[option.flag]
        description = option.field.description
        assert description and param.help and param.help.startswith(description), option.flag
        parsed = option.from_cli(param.default)
        for field_path in option.paths:
            assert parsed == value_at(defaults, field_path), (option.flag, field_path)


@pytest.mark.parametrize("subcommand", ["show", "decide"])
def test_review_options_are_the_review_flows_fields(subcommand: str) -> None:
    cli_options = options_of("review", subcommand)
    fields = ReviewParameters.model_fields
    for flag, name in [
        ("--run", "run_id"),
        ("--store", "store"),
        ("--alpha", "alpha"),
        ("--evaluator", "evaluator"),
    ]:
        param, field = cli_options[flag], fields[name]
        assert param.help == field.description
        assert param.required == field.is_required()
        if not field.is_required():
            assert param.default == field.default


def _parsed(model: type[BaseModel], args: list[str], env: dict[str, str] | None = None) -> Any:
    """What a command derived from MODEL hands its body for ARGS."""
    seen: list[BaseModel] = []
    single = typer.Typer()
    single.command()(model_command(model, seen.append))
    result = CliRunner().invoke(single, args, env=env)
    if result.exception is not None:
        raise result.exception
    return seen[0]


def test_cli_values_reach_the_model() -> None:
    args = [
        "--ids", "a, b",
        "--model", "m",
        "--base-url", "http://127.0.0.1:9/v1",
        "--timeout", "5",
        "--memory", "256",
        "--alphas", "0.5,0.1",
        "--sizes", "2",
    ]  # fmt: skip
    endpoint = {"model": "m", "base_url": "http://127.0.0.1:9/v1"}
    assert _parsed(PortfolioRunParameters, args) == PortfolioRunParameters(
        ids=["a", "b"],
        generator=endpoint,
        evaluator=endpoint,
        judge=endpoint,
        sandbox={"timeout_s": 5, "memory_mb": 256},
        alphas=[0.1, 0.5],
        sizes=[2],
    )
    assert _parsed(PortfolioRunParameters, []) == PortfolioRunParameters()
    stored = _parsed(PortfolioRunParameters, [], env={"OPTFOLIO_STORE": "/srv/store"})
    assert stored.store == "/srv/store"
    design = _parsed(SimulationParameters, ["--K", "10,20", "--errors", "0,0.5"])
    assert (design.Ks, design.evaluator_errors) == ([10, 20], [0.0, 0.5])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--K", "10,abc"], "--K '10,abc'"),
        (["--K", "1"], "K=1"),
        (["--alpha-step", "0.03"], "parameter alpha_step"),
    ],
)
def test_bad_cli_values_are_one_input_error(args: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _parsed(SimulationParameters, args)


def test_flows_take_their_one_typed_model() -> None:
    import importlib

    for entrypoint, model in FLOW_MODELS.items():
        file, name = entrypoint.split(":")
        module = file.removesuffix(".py").replace("/", ".")
        flow = getattr(importlib.import_module(module), name)
        hints = typing.get_type_hints(flow.fn)
        assert list(flow.parameters.properties) == ["parameters"], entrypoint
        assert model in (hints["parameters"], *typing.get_args(hints["parameters"]))


def _paths(values: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every value in VALUES (nested dicts: their values')."""
    found = []
    for key, value in values.items():
        if isinstance(value, dict):
            found += _paths(value, (*path, key))
        else:
            found.append((*path, key))
    return found


def test_deployments_are_valid_parameters_and_repeat_no_default() -> None:
    config = yaml.safe_load((REPO_ROOT / "deployments" / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        model = FLOW_MODELS[deployment["entrypoint"]]
        given = deployment.get("parameters") or {}
        assert set(given) <= {"parameters"}, deployment["name"]
        values = given.get("parameters") or {}
        required = {"run_id": "given-per-run"} if model is ReviewParameters else {}
        parsed = model(**required, **values)  # extra="forbid": a misspelt field fails too
        defaults = model(**required)
        for path in _paths(values):
            assert value_at(parsed, path) != value_at(defaults, path), (deployment["name"], path)


def test_sandbox_defaults_and_bounds_come_from_the_sandbox() -> None:
    settings = SandboxSettings()
    assert settings.container_limits() == limits.DEFAULT_LIMITS
    assert settings.parallelism == limits.PARALLELISM
    for bad in (
        {"memory_mb": limits.MEMORY_MB_MIN - 1},
        {"memory_mb": limits.MEMORY_MB_MAX + 1},
        {"timeout_s": limits.TIMEOUT_S_MAX + 1},
    ):
        with pytest.raises(ValidationError):
            SandboxSettings(**bad)
        with pytest.raises(ValueError, match="unusable"):
            limits.Limits(**bad)


def test_alpha_grids_and_the_one_mapping_to_assembly_settings() -> None:
    assert open_alpha_grid() == closed_alpha_grid()[1:-1]
    assert PortfolioRunParameters().alphas == open_alpha_grid()
    assert list(AssemblySettings().alphas) == closed_alpha_grid()

    p = PortfolioRunParameters(alphas=[0.5, 0.1], sizes=[4, 2], random_draws=3, seed=7)
    settings = AssemblySettings.from_parameters(p)
    assert settings == AssemblySettings.from_parameters(p.model_dump(mode="json"))  # manifest
    assert (settings.alphas, settings.sizes, settings.random_draws, settings.tie_seed) == (
        (0.1, 0.5),
        (2, 4),
        3,
        7,
    )
    assert AssemblySettings.from_parameters(p, [0.25]).alphas == (0.1, 0.25, 0.5)
    defaults, run = AssemblySettings.from_parameters(None), PortfolioRunParameters()
    assert (defaults.sizes, defaults.random_draws) == (tuple(run.sizes), run.random_draws)


def test_each_role_is_asked_what_its_parameters_say() -> None:
    p = PortfolioRunParameters(candidates=7, eval_samples=3, judge_samples=2, seed=5)
    endpoint = ModelEndpoint(model="m", base_url="http://127.0.0.1:9/v1")
    asked = {role: p.role_request(role, endpoint) for role in ("generator", "evaluator", "judge")}
    assert {role: (r.samples, r.max_tokens, r.seed) for role, r in asked.items()} == {
        "generator": (7, p.generator_max_tokens, 5),
        "evaluator": (3, p.review_max_tokens, 5),
        "judge": (2, p.review_max_tokens, 5),
    }


def test_judge_samples_default_to_the_evaluator_samples() -> None:
    """The judge scores under the evaluator's regime: as many samples unless asked for fewer,
    resolved in the model, so the CLI, the form, the fingerprint and the stages agree."""
    p = PortfolioRunParameters(eval_samples=3)
    assert p.judge_samples == 3
    assert p.role_request("judge", ModelEndpoint()).samples == 3
    assert PortfolioRunParameters().judge_samples == PortfolioRunParameters().eval_samples
    assert PortfolioRunParameters(eval_samples=3, judge_samples=1).judge_samples == 1
    assert PortfolioRunParameters(eval_samples=3, judge_samples=0).judge_samples == 0
    # The manifest holds the integer; read back, it is the same run.
    stored = PortfolioRunParameters.model_validate(p.model_dump(mode="json"))
    assert stored.judge_samples == 3 and stored.fingerprint() == p.fingerprint()
    assert p.fingerprint() == PortfolioRunParameters(eval_samples=3, judge_samples=3).fingerprint()
    assert p.fingerprint() != PortfolioRunParameters(eval_samples=3, judge_samples=1).fingerprint()
    # The command line and the UI form say so: empty by default, the evaluator's m meant.
    assert _parsed(PortfolioRunParameters, ["--eval-samples", "2"]).judge_samples == 2
    demo = ["--eval-samples", "2", "--judge-samples", "1"]  # the demo asks for fewer
    assert _parsed(PortfolioRunParameters, demo).judge_samples == 1
    help_text = options_of("run")["--judge-samples"].help or ""
    assert "evaluator" in help_text
    form = PortfolioRunParameters.model_json_schema()["properties"]["judge_samples"]
    assert form["default"] is None and "evaluator" in form["description"]
    with pytest.raises(InputError, match="judge_samples"):
        parse_parameters(judge_samples=65)


def test_no_store_default_outside_the_models() -> None:
    """The store's default is the models' ("store", or $OPTFOLIO_STORE on the command line)."""
    assert PortfolioRunParameters().store == ReviewParameters(run_id="r").store == "store"
    assert Path(options_of("run")["--store"].default) == Path("store")


def test_a_configured_endpoint_keeps_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A role's own request timeout reaches its client: slow CPU decoding of n long answers
    must not be cut at the 300 s default and asked again (the server keeps decoding the
    abandoned request)."""
    from optfolio.llm.settings import llm_settings
    from optfolio.run_config import parse_parameters
    from servers.local_model.endpoint import role_endpoints

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    endpoint = {"model": "m", "base_url": "http://127.0.0.1:9/v1", "timeout_s": 1800}
    parameters = parse_parameters(generator=endpoint, evaluator=endpoint, judge=endpoint)
    with role_endpoints(parameters) as resolved:
        assert {role: e.timeout_s for role, e in resolved.items()} == dict.fromkeys(
            ("generator", "evaluator", "judge"), 1800
        )
        assert llm_settings(resolved["generator"]).timeout_s == 1800


# ---- problems given with the run -------------------------------------------------------------


@pytest.fixture(scope="module")
def counting_endpoint() -> Iterator[str]:
    """The hand-written OpenAI-compatible endpoint that counts the requests it serves."""
    from bench import _fake_endpoint as fake_endpoint

    with fake_endpoint.running(latency=0.05) as url:
        yield url


PROBLEM = {"id": "p1", "description": "Maximize x subject to x <= 3.", "objective": 3.0}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"problems": [PROBLEM], "path": "x.jsonl"}, "parameters: .*problems and path"),
        ({"problems": [PROBLEM, {**PROBLEM, "objective": None}]}, "problems: .*id 'p1'"),
        ({"problems": [{**PROBLEM, "id": "../p1"}]}, r"problems\.0\.id: .*'\.\./p1'"),
        ({"problems": [{**PROBLEM, "id": "a b"}]}, r"problems\.0\.id: .*'a b' is not allowed"),
        ({"problems": [{"id": "p1"}]}, r"problems\.0\.description: Field required"),
        ({"problems": [{**PROBLEM, "objective": "sixty"}]}, r"problems\.0\.objective"),
        ({"problems": []}, "parameter problems: .*empty"),
    ],
)
def test_bad_inline_problems_are_refused_naming_the_field(
    values: dict[str, Any], message: str
) -> None:
    from optfolio.run_config import parse_parameters

    with pytest.raises(InputError, match=message):
        parse_parameters(**values)


def test_inline_problems_still_take_ids_and_limit() -> None:
    from optfolio.run_config import parse_parameters

    given = [PROBLEM, {**PROBLEM, "id": "p2"}]
    p = parse_parameters(problems=given, ids=["p2"], limit=1)
    assert [problem.model_dump() for problem in p.problems or []] == given
    assert (p.ids, p.limit) == (["p2"], 1)
    # A different problem text is a different run: resuming it under the same id is refused.
    changed = parse_parameters(problems=[{**PROBLEM, "description": "Minimize x."}])
    assert parse_parameters(problems=[PROBLEM]).fingerprint() != changed.fingerprint()


def test_one_problem_from_the_command_line(tmp_path: Path) -> None:
    """--problem TEXT and --problem-file FILE become the one inline problem; ids derive from
    the text (stable) or the file name (made safe)."""
    from cli.run import text_problem_id, with_problem_given

    plain = PortfolioRunParameters(candidates=3)
    text = "Maximize 3x + 2y subject to x + y <= 4."
    given = with_problem_given(plain, text, None, 12, None)
    assert given.problems is not None
    [problem] = given.problems
    assert (problem.id, problem.description, problem.objective) == (
        text_problem_id(text),
        text,
        12.0,
    )
    assert problem.id.startswith("problem-") and len(problem.id) == len("problem-") + 8
    assert text_problem_id(text + "\n") == problem.id != text_problem_id(text + " x")
    assert given.candidates == 3  # the other options kept
    file = tmp_path / "my blending (v2).txt"
    file.write_text(text + "\n", encoding="utf-8")
    [from_file] = with_problem_given(plain, None, file, None, None).problems or []
    assert (from_file.id, from_file.description, from_file.objective) == (
        "my-blending-v2",
        text,
        None,
    )
    [named] = with_problem_given(plain, None, file, None, "blend-2").problems or []
    assert named.id == "blend-2"
    assert with_problem_given(plain, None, None, None, None) is plain
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n", encoding="utf-8")
    for args, message in [
        ((None, empty, None, None), f"--problem-file {empty}: file is empty"),
        ((text, file, None, None), "--problem and --problem-file are exclusive"),
        ((None, None, 3.0, None), "--objective needs --problem or --problem-file"),
        ((None, None, None, "x"), "--problem-id needs --problem or --problem-file"),
        ((text, None, None, "a/b"), "parameter problems.0.id: .*'a/b' is not allowed"),
    ]:
        with pytest.raises(InputError, match=message):
            with_problem_given(plain, *args)
    with pytest.raises(InputError, match="--problem-file and --dataset are exclusive"):
        with_problem_given(plain, None, file, None, None, dataset_given=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--problem-file", "{dir}/missing.txt"], "--problem-file {dir}/missing.txt: no such file"),
        (["--problem-file", "{dir}/latin1.txt"], "{dir}/latin1.txt: line 1: not UTF-8"),
        (["--problem-file", "{dir}/ok.txt", "--path", "x.jsonl"], "--path are exclusive"),
        (["--problem-file", "{dir}/ok.txt", "--dataset", "mamo"], "--dataset are exclusive"),
        (["--problem-file", "{dir}/ok.txt", "--objective", "nan"], "'objective': objective must"),
    ],
)
def test_a_bad_problem_file_is_refused_before_any_paid_call(
    args: list[str], message: str, counting_endpoint: str, tmp_path: Path
) -> None:
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    (tmp_path / "latin1.txt").write_bytes("caf\xe9 problem".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("Maximize x subject to x <= 3.", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("optfolio")),
            "run",
            *(arg.format(dir=tmp_path) for arg in args),
            "--base-url",
            f"{counting_endpoint}/v1",
            "--store",
            str(tmp_path / "store"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    with urllib.request.urlopen(f"{counting_endpoint}/stats", timeout=10) as response:
        requests = json.load(response)["requests"]  # over every case so far: all refused
    assert done.returncode == 2, done.stderr
    assert message.format(dir=tmp_path) in done.stderr, done.stderr
    assert done.stderr.count("\n") <= 4, done.stderr
    assert requests == 0
    assert not (tmp_path / "store").exists()  # nothing started, nothing written
