"""Dataset loaders: the real benchmark files, the ground-truth rule, bad records, the sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest

from optfolio.datasets import (
    KINDS,
    MAX_DESCRIPTION_CHARS,
    inline_problems,
    load_problems,
    objective_label,
    sample_dataset_path,
    select_problems,
)
from optfolio.errors import InputError
from optfolio.schemas import PROBLEMS
from optfolio.store import conform
from tests.plugins.ci import IN_CI

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FILES = {
    "nlp4lp": SHARED_DATA / "nlp4lp",
    "nl4opt": SHARED_DATA / "nl4opt" / "NL4OPT-E.json",
    "mamo": SHARED_DATA / "mamo" / "mamo_easy_lp.jsonl",
    "optibench": SHARED_DATA / "optibench" / "OptiBench.json",
}
# In CI the benchmark files are always beside the clone: their absence is a failure there.
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir() and not IN_CI, reason=f"benchmark files not present at {SHARED_DATA}"
)


@pytest.fixture(scope="module")
def real() -> dict[str, pa.Table]:
    return {kind: load_problems(kind, path) for kind, path in REAL_FILES.items()}


def _row(table: pa.Table, problem_id: str) -> dict:
    rows = [row for row in table.to_pylist() if row["problem_id"] == problem_id]
    assert len(rows) == 1, problem_id
    return rows[0]


# ---- the real files ------------------------------------------------------------------------


@needs_shared_data
@pytest.mark.parametrize(
    ("kind", "count", "with_objective"),
    [("nlp4lp", 130, 130), ("nl4opt", 289, 289), ("mamo", 652, 652), ("optibench", 605, 508)],
)
def test_real_files_load_completely(real, kind, count, with_objective):
    table = real[kind]
    assert table.schema == PROBLEMS
    assert table.num_rows == count
    assert table.num_rows - table["objective_truth"].null_count == with_objective
    assert len(set(table["problem_id"].to_pylist())) == count
    assert all(pid.startswith(f"{kind}-") for pid in table["problem_id"].to_pylist())
    assert set(table["dataset"].to_pylist()) == {kind}
    assert conform("problems", table).equals(table)


@needs_shared_data
def test_nlp4lp_objectives_match_the_index_and_solution_files(real):
    table = real["nlp4lp"]
    index = [json.loads(line) for line in (REAL_FILES["nlp4lp"] / "nlp4lp_index.jsonl").open()]
    by_id = {row["problem_id"]: row for row in table.to_pylist()}
    for entry in index:
        row = by_id[f"nlp4lp-{entry['id']}"]
        assert row["objective_truth"] == entry["objective"]
        assert row["description"] == entry["description"]
    raw = json.loads((REAL_FILES["nlp4lp"] / "problems" / "0" / "solution.json").read_text())
    first = by_id["nlp4lp-0"]
    assert json.loads(first["solution_truth"]) == raw
    assert first["objective_truth"] == 684000.0
    # Folders come in numeric order, not string order.
    assert table["problem_id"].to_pylist()[:3] == ["nlp4lp-0", "nlp4lp-1", "nlp4lp-4"]


@needs_shared_data
@pytest.mark.parametrize(
    ("problem_id", "objective"),
    [
        ("nl4opt-0", 3000.0),  # last label "Maximized number of fish transported"
        ("nl4opt-156", 14.0),  # "Minimum number of vans used" is the first of two labels
        ("nl4opt-90", 100.0),  # only label "Total Number of Workers": the total fallback
        ("nl4opt-246", 990.0),  # "Total number of light changes minimized to"
        ("optibench-0", 3600.0),  # single label "The maximum profit you can get"
        ("optibench-99", 2030.3362942094193),  # "The maximum volume of the box" over the height
        ("optibench-130", 1116.0),  # "Objective Value (Profit Rate)"
        ("optibench-23", None),  # two-part question: "The maximum profit", "New maximum profit"
        ("optibench-4", None),  # asks which fire stations to build: no single number
        ("optibench-583", None),  # asks for fertilizer quantities only
        ("mamo-2", 8350.0),
    ],
)
def test_ground_truth_of_known_records(real, problem_id, objective):
    kind, record = problem_id.split("-")
    row = _row(real[kind], problem_id)
    assert row["objective_truth"] == objective
    if kind in {"nl4opt", "optibench"}:
        raw = next(r for r in json.loads(REAL_FILES[kind].read_text()) if r["index"] == int(record))
        assert json.loads(row["solution_truth"]) == raw["results"]
        assert row["description"] == raw["question"].strip()
        assert row["source"] == f"{REAL_FILES[kind]}#{int(record)}"


@needs_shared_data
def test_sample_matches_the_nl4opt_loader(real):
    sample = load_problems("jsonl", sample_dataset_path())
    upstream = {row["problem_id"]: row for row in real["nl4opt"].to_pylist()}
    for row in sample.to_pylist():
        original = upstream[row["problem_id"]]
        assert row["description"] == original["description"]
        assert row["objective_truth"] == original["objective_truth"]
        assert json.loads(row["solution_truth"]) == json.loads(original["solution_truth"])


# ---- the ground-truth rule -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["Number of chairs", "Maximized Profit"], "Maximized Profit"),
        (["Minimum number of vans used", "Number of trucks used"], "Minimum number of vans used"),
        (["x", "Total number of shifts minimized to"], "Total number of shifts minimized to"),
        (["The height that gives maximum volume", "The maximum volume"], "The maximum volume"),
        (["The maximum profit", "x", "New maximum profit"], None),
        (["Number of trips by air", "Total Number of Trips"], "Total Number of Trips"),
        (["The number of boxes", "The total cost"], "The total cost"),
        (["The quantity of Fertilizer 1", "The quantity of Fertilizer 2"], None),
        (["Whether a station is built in City 1"], None),
        (["Total profit", "Number of items"], None),  # the total fallback looks at the last label
        (["Profit Efficiency"], None),
        ([], None),
    ],
)
def test_objective_label_rule(labels, expected):
    assert objective_label(labels) == expected


# ---- the shipped sample and selection ------------------------------------------------------


def test_sample_ships_with_the_package_and_conforms():
    path = sample_dataset_path()
    assert path.is_file()
    for name in ("LICENSE-Apache-2.0.txt", "LICENSE-NL4Opt-MIT.txt", "SOURCE.md"):
        assert (path.parent / name).is_file()
    table = load_problems("jsonl", path)
    assert 12 <= table.num_rows <= 16
    assert conform("problems", table).equals(table)
    assert table["objective_truth"].null_count == 0
    assert all(math.isfinite(v) for v in table["objective_truth"].to_pylist())
    assert all(pid.startswith("nl4opt-") for pid in table["problem_id"].to_pylist())
    assert table["source"][0].as_py() == f"{path}#1"


def test_selection_by_limit_and_ids(tmp_path):
    path = _write_jsonl(tmp_path, [_ok(i) for i in ("a", "b", "c", "d")])
    assert load_problems("jsonl", path, limit=2)["problem_id"].to_pylist() == ["a", "b"]
    # File order is kept, whatever order the ids are asked in.
    picked = load_problems("jsonl", path, ids=["d", "b"])
    assert picked["problem_id"].to_pylist() == ["b", "d"]
    assert load_problems("jsonl", path, ids=["d", "b", "c"], limit=1).num_rows == 1
    assert load_problems("jsonl", path, ids="c")["problem_id"].to_pylist() == ["c"]
    with pytest.raises(InputError, match="ids is empty"):
        load_problems("jsonl", path, ids=[])
    with pytest.raises(InputError, match=r"no problem with id 'zz'"):
        load_problems("jsonl", path, ids=["a", "zz"])
    for bad_limit in (0, -1, True, 1.5):
        with pytest.raises(InputError, match="limit must be a positive integer"):
            load_problems("jsonl", path, limit=bad_limit)


@needs_shared_data
def test_ids_accept_problem_ids_and_record_ids(real):
    table = load_problems("nl4opt", REAL_FILES["nl4opt"], ids=["17", "nl4opt-3"])
    assert table["problem_id"].to_pylist() == ["nl4opt-3", "nl4opt-17"]


def test_unknown_kind_and_missing_path(tmp_path):
    with pytest.raises(InputError, match="unknown dataset kind 'csv'"):
        load_problems("csv", tmp_path / "x.csv")
    for kind in KINDS:
        with pytest.raises(InputError, match="no such f"):
            load_problems(kind, tmp_path / "missing")


# ---- bad records ---------------------------------------------------------------------------


def _ok(problem_id: str, **fields) -> dict:
    return {"id": problem_id, "description": f"Maximize {problem_id}.", **fields}


def _write_jsonl(tmp_path: Path, records: list, name: str = "problems.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _refused(kind: str, path: Path) -> str:
    with pytest.raises(InputError) as caught:
        load_problems(kind, path)
    message = str(caught.value)
    assert str(path) in message  # every message names the file
    return message


@pytest.mark.parametrize(
    ("bad", "record", "field", "problem"),
    [
        ({"id": "x"}, "line 2 (id 'x')", "'description'", "missing"),
        ({"description": "Maximize."}, "line 2", "'id'", "missing"),
        (_ok("x", description=5), "line 2 (id 'x')", "'description'", "expected a string"),
        (_ok("x", description="  \n"), "line 2 (id 'x')", "'description'", "empty description"),
        (
            _ok("x", description="x" * (MAX_DESCRIPTION_CHARS + 1)),
            "line 2 (id 'x')",
            "'description'",
            "limit 50,000",
        ),
        (_ok("x", objective="12"), "line 2 (id 'x')", "'objective'", "expected a number"),
        (_ok("x", objective=True), "line 2 (id 'x')", "'objective'", "expected a number"),
        (_ok("x", objective=math.inf), "line 2 (id 'x')", "'objective'", "must be finite"),
        (_ok("x", objective=math.nan), "line 2 (id 'x')", "'objective'", "must be finite"),
        (_ok("x", solution={"v": math.nan}), "line 2 (id 'x')", "'solution'", "NaN"),
        ({"id": True, "description": "d"}, "line 2 (id True)", "'id'", "string or integer"),
        ({"id": " x ", "description": "d"}, "line 2 (id ' x ')", "'id'", "whitespace"),
        ([1, 2], "line 2", None, "expected an object"),
        (_ok("a"), "line 2 (id 'a')", None, "duplicate id 'a' (also line 1 (id 'a'))"),
    ],
)
def test_bad_jsonl_record_is_named(tmp_path, bad, record, field, problem):
    # json.dumps writes NaN/Infinity tokens, which Python's json reads back: the loader must.
    message = _refused("jsonl", _write_jsonl(tmp_path, [_ok("a"), bad]))
    line = next(m for m in message.splitlines() if record in m)
    if field:
        assert f"field {field}" in line
    assert problem in line


# ---- problems given with the run ------------------------------------------------------------


def test_inline_problems_load_as_the_same_jsonl_records_do(tmp_path):
    given = [_ok("a", objective=60), _ok("b", description="  Minimize y.\n"), _ok("c")]
    table = inline_problems(given)
    assert conform("problems", table).equals(table)
    from_file = load_problems("jsonl", _write_jsonl(tmp_path, given))
    same = ["problem_id", "description", "objective_truth", "solution_truth"]
    assert table.select(same).equals(from_file.select(same))
    assert table["description"][1].as_py() == "Minimize y."
    assert table["objective_truth"].to_pylist() == [60.0, None, None]
    assert set(table["dataset"].to_pylist()) == {"inline"}
    assert table["source"].to_pylist() == ["inline#0", "inline#1", "inline#2"]
    # Selected as a dataset is: file (here list) order, ids, then the limit.
    assert inline_problems(given, ids=["c", "a"])["problem_id"].to_pylist() == ["a", "c"]
    assert inline_problems(given, ids=["c", "a"], limit=1)["problem_id"].to_pylist() == ["a"]
    with pytest.raises(InputError, match="inline problems: no problem with id 'zz'"):
        inline_problems(given, ids=["zz"])


def test_a_run_reads_its_inline_problems_else_its_dataset(tmp_path):
    path = _write_jsonl(tmp_path, [_ok("from-file")])
    inline = [_ok("typed")]
    assert select_problems("jsonl", None, inline)["problem_id"].to_pylist() == ["typed"]
    assert select_problems("jsonl", path, None)["problem_id"].to_pylist() == ["from-file"]
    sample = load_problems("jsonl", sample_dataset_path(), limit=2)
    assert select_problems("jsonl", None, None, limit=2).equals(sample)


@pytest.mark.parametrize(
    ("bad", "record", "field", "problem"),
    [
        ({"id": "x"}, "problems[1] (id 'x')", "'description'", "missing"),
        (_ok("x", description="  \n"), "problems[1] (id 'x')", "'description'", "empty"),
        (
            _ok("x", description="x" * (MAX_DESCRIPTION_CHARS + 1)),
            "problems[1] (id 'x')",
            "'description'",
            "limit 50,000",
        ),
        (_ok("x", objective=math.inf), "problems[1] (id 'x')", "'objective'", "must be finite"),
        (_ok("x", objective="60"), "problems[1] (id 'x')", "'objective'", "expected a number"),
        ({"id": " x", "description": "d"}, "problems[1] (id ' x')", "'id'", "whitespace"),
        (_ok("a"), "problems[1] (id 'a')", None, "duplicate id 'a' (also problems[0] (id 'a'))"),
    ],
)
def test_bad_inline_problem_is_named(bad, record, field, problem):
    with pytest.raises(InputError) as caught:
        inline_problems([_ok("a"), bad])
    message = str(caught.value)
    assert message.startswith("inline problems: 1 bad record(s):")
    [line] = [m for m in message.splitlines() if record in m]
    if field:
        assert f"field {field}" in line
    assert problem in line


def test_no_inline_problems_is_refused():
    with pytest.raises(InputError, match="inline problems: the list is empty"):
        inline_problems([])


def test_whole_file_is_validated_and_errors_are_counted(tmp_path):
    records = [_ok(f"p{i}") for i in range(5)] + [{"id": f"q{i}"} for i in range(25)]
    path = _write_jsonl(tmp_path, records)
    # A limit does not hide bad records further down: nothing half-loaded is returned.
    with pytest.raises(InputError) as caught:
        load_problems("jsonl", path, limit=1)
    message = str(caught.value)
    assert "25 bad record(s)" in message
    assert "line 6 (id 'q0'), field 'description': missing" in message
    assert "... and 15 more" in message


def test_unreadable_files_are_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b" \n\n")
    assert "file is empty" in _refused("jsonl", empty)

    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"id": "a", "description": "ok"}\n{"id": "b", "description": "caf\xe9"}\n')
    assert "line 2: not UTF-8 (byte 0xe9" in _refused("jsonl", latin1)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "description": "ok"}\n{"id": "b", "descr\n', encoding="utf-8")
    assert "line 2: invalid JSON" in _refused("jsonl", broken)

    for kind in ("nl4opt", "optibench"):
        not_array = tmp_path / f"{kind}.json"
        not_array.write_text('{"index": 0}', encoding="utf-8")
        assert "expected a JSON array" in _refused(kind, not_array)
        empty_array = tmp_path / f"{kind}-empty.json"
        empty_array.write_text("[]", encoding="utf-8")
        assert "holds no problems" in _refused(kind, empty_array)
        truncated = tmp_path / f"{kind}-truncated.json"
        truncated.write_text('[\n{"index": 0,\n', encoding="utf-8")
        assert "line 3, column 1: invalid JSON" in _refused(kind, truncated)


def _results_record(index, **fields) -> dict:
    record = {
        "index": index,
        "question": "Maximize profit.",
        "results": {"Number of chairs": "4.0", "Maximized Profit": "224.0"},
    }
    record.update(fields)
    return record


@pytest.mark.parametrize("kind", ["nl4opt", "optibench"])
@pytest.mark.parametrize(
    ("bad", "record", "field", "problem"),
    [
        (
            {"index": 1, "results": {"Maximized Profit": "1"}},
            "[1] (index 1)",
            "'question'",
            "missing",
        ),
        (_results_record(1, question=""), "[1] (index 1)", "'question'", "empty description"),
        (_results_record(1, question=None), "[1] (index 1)", "'question'", "got null"),
        (_results_record(1, results=[1]), "[1] (index 1)", "'results'", "non-empty object"),
        (_results_record(1, results={}), "[1] (index 1)", "'results'", "non-empty object"),
        (
            _results_record(1, results={"Maximized Profit": "inf"}),
            "[1] (index 1)",
            "'results[\"Maximized Profit\"]'",
            "must be finite",
        ),
        (
            _results_record(1, results={"Maximized Profit": "lots"}),
            "[1] (index 1)",
            "'results[\"Maximized Profit\"]'",
            "expected a number, got 'lots'",
        ),
        (_results_record(True), "[1] (index True)", "'index'", "string or integer"),
        (_results_record(0), "[1] (index 0)", None, "duplicate id '0' (also record [0]"),
    ],
)
def test_bad_results_record_is_named(tmp_path, kind, bad, record, field, problem):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_results_record(0), bad]), encoding="utf-8")
    message = _refused(kind, path)
    line = next(m for m in message.splitlines() if f"record {record}" in m)
    if field:
        assert f"field {field}" in line
    assert problem in line


@pytest.mark.parametrize(
    ("bad", "field", "problem"),
    [
        ({"id": 3, "Question": "Min cost?"}, "'Answer'", "missing"),
        ({"id": 3, "Question": "Min cost?", "Answer": "NaN"}, "'Answer'", "must be finite"),
        ({"id": 3, "Question": "Min cost?", "Answer": "about 5"}, "'Answer'", "expected a number"),
        ({"id": 3, "Question": "", "Answer": "5"}, "'Question'", "empty description"),
        ({"id": 1, "Question": "Min cost?", "Answer": "5"}, None, "duplicate id '1'"),
    ],
)
def test_bad_mamo_record_is_named(tmp_path, bad, field, problem):
    good = {"id": 1, "Question": "Min cost?", "Answer": "10000", "Type": "easy_lp"}
    message = _refused("mamo", _write_jsonl(tmp_path, [good, bad], "mamo.jsonl"))
    line = next(m for m in message.splitlines() if m.strip().startswith("line 2"))
    if field:
        assert f"field {field}" in line
    assert problem in line


def _nlp4lp_problem(root: Path, name: str, description: bytes | None, solution: str | None):
    folder = root / "problems" / name
    folder.mkdir(parents=True)
    if description is not None:
        (folder / "description.txt").write_bytes(description)
    if solution is not None:
        (folder / "solution.json").write_text(solution, encoding="utf-8")


def test_nlp4lp_folder_format(tmp_path):
    _nlp4lp_problem(tmp_path, "10", b"Maximize x.\n", '{"variables": {"x": 1}, "objective": 2.5}')
    _nlp4lp_problem(tmp_path, "2", b"Minimize y.", None)  # no ground truth: loads with nulls
    (tmp_path / "problems" / ".DS_Store").write_bytes(b"\x00")
    table = load_problems("nlp4lp", tmp_path)
    assert table["problem_id"].to_pylist() == ["nlp4lp-2", "nlp4lp-10"]
    assert table["objective_truth"].to_pylist() == [None, 2.5]
    assert table["description"].to_pylist()[1] == "Maximize x."  # trailing newline stripped
    assert table["solution_truth"].to_pylist()[1] == '{"variables":{"x":1},"objective":2.5}'
    # The problems/ folder itself is accepted too.
    assert load_problems("nlp4lp", tmp_path / "problems").num_rows == 2


@pytest.mark.parametrize(
    ("description", "solution", "field", "problem"),
    [
        (None, '{"objective": 1}', "'description.txt'", "missing"),
        (b"caf\xe9", '{"objective": 1}', "'description.txt'", "not UTF-8"),
        (b"  ", '{"objective": 1}', "'description.txt'", "file is empty"),
        (b"Max x.", '{"variables": {}}', "'solution.json: objective'", "missing"),
        (b"Max x.", '{"objective": null}', "'solution.json: objective'", "got null"),
        (b"Max x.", '{"objective": Infinity}', "'solution.json: objective'", "must be finite"),
        (b"Max x.", '{"objective": 1', "'solution.json'", "invalid JSON"),
        (b"Max x.", "[1]", "'solution.json'", "expected an object"),
    ],
)
def test_bad_nlp4lp_problem_is_named(tmp_path, description, solution, field, problem):
    _nlp4lp_problem(tmp_path, "0", b"Maximize x.", '{"objective": 1}')
    _nlp4lp_problem(tmp_path, "7", description, solution)
    message = _refused("nlp4lp", tmp_path)
    line = next(m for m in message.splitlines() if "problem '7'" in m)
    assert f"field {field}" in line
    assert problem in line


def test_nlp4lp_empty_folder_is_refused(tmp_path):
    (tmp_path / "problems").mkdir()
    with pytest.raises(InputError, match="folder is empty"):
        load_problems("nlp4lp", tmp_path)
