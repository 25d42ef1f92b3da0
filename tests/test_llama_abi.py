"""The llama.cpp library from the xllamacpp wheel: found without importing the package, its
struct layout checked against the pinned build, and a context made with what was asked."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from servers.local_model import llama_abi
from tests.plugins.ci import prerequisite_missing

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def library() -> ctypes.CDLL:
    try:
        return llama_abi.load()
    except llama_abi.LayoutMismatch as error:
        prerequisite_missing(str(error))


def test_the_library_is_found_from_the_wheel_record_without_running_the_package() -> None:
    code = (
        "import sys\n"
        "from servers.local_model import llama_abi\n"
        "llama_abi.load()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'xllamacpp'))\n"
        "print(llama_abi.library_path())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    imported, path = done.stdout.splitlines()
    assert imported == "[]"
    assert path.endswith(".so") and "xllamacpp" in path and Path(path).is_file()


def test_the_pinned_build_matches_the_declared_layout(library: ctypes.CDLL) -> None:
    llama_abi.check_layout(library)  # raises on any member that differs
    assert ctypes.sizeof(llama_abi.ContextParams) == 168
    params = library.llama_context_default_params()
    assert (params.n_ctx, params.n_batch, params.n_threads) == (512, 2048, 4)
    assert (params.offload_kqv, params.no_perf, params.kv_unified) == (True, True, False)


class _OtherBuild:
    """A library whose context defaults differ in one member, as a changed struct would."""

    def __init__(self, real: ctypes.CDLL, member: str, value: object) -> None:
        self._real, self._member, self._value = real, member, value

    def llama_context_default_params(self) -> llama_abi.ContextParams:
        params = self._real.llama_context_default_params()
        setattr(params, self._member, self._value)
        return params

    def llama_model_default_params(self) -> llama_abi.ModelParams:
        return self._real.llama_model_default_params()


@pytest.mark.parametrize(("member", "value"), [("kv_unified", True), ("n_threads", 8)])
def test_a_build_with_another_layout_is_refused_naming_the_member(
    library: ctypes.CDLL, member: str, value: object
) -> None:
    with pytest.raises(llama_abi.LayoutMismatch, match=member):
        llama_abi.check_layout(_OtherBuild(library, member, value))  # type: ignore[arg-type]


def test_another_installed_version_is_refused_before_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(llama_abi, "PINNED_VERSION", "2020.1.1")
    with pytest.raises(llama_abi.LayoutMismatch, match=r"declares the C structs of 2020\.1\.1"):
        llama_abi.library_path()
