"""A run's own records in the store: its manifest (the parameters it was started with, so a
resume asks for the same work) and its lock (one process per run id at a time)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optfolio.errors import InputError, OptfolioError
from optfolio.run_config import PortfolioRunParameters
from optfolio.store import RunStore, atomic_path, check_name, raise_if_full

MANIFEST = "manifest.json"


def manifest_path(store: RunStore, run_id: str) -> Path:
    return store.root / "runs" / f"run_id={check_name('run id', run_id)}" / MANIFEST


def open_run(store: RunStore, run_id: str, parameters: PortfolioRunParameters) -> dict[str, Any]:
    """Record the run's parameters, or check that a resumed run asks for the same work."""
    path = manifest_path(store, run_id)
    fingerprint = parameters.fingerprint()
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest["fingerprint"] != fingerprint:
            raise InputError(
                f"run {run_id!r} exists with other parameters (see {path}); resume it with the"
                " same parameters or choose a new --run-id"
            )
        return manifest
    manifest = {
        "run_id": run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        "parameters": parameters.model_dump(mode="json"),
    }
    write_json_atomically(path, manifest)
    return manifest


class RunInProgress(OptfolioError):
    """Another process is running this run id now; two writers of one run would do (and pay
    for) the same work twice."""


@contextlib.contextmanager
def run_lock(store: RunStore, run_id: str) -> Iterator[Path]:
    """Hold ``<store>/runs/run_id=<id>/lock`` (``flock``) while the run works; a second
    process asking for the same run id is refused at once. The kernel drops the lock when
    its process dies, even by SIGKILL, so a killed run can be resumed immediately. (Runs
    with different ids share a store freely: their parts never collide and the response
    cache takes concurrent writers.)"""
    path = manifest_path(store, run_id).with_name("lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
    except OSError as error:
        raise_if_full(error, path)
        raise
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise RunInProgress(
                f"run {run_id!r} is already running (process {holder}; lock {path}): wait"
                " for it to end, or choose another --run-id"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def list_runs(store: RunStore) -> list[dict[str, Any]]:
    runs_dir = store.root / "runs"
    manifests = sorted(runs_dir.glob(f"run_id=*/{MANIFEST}")) if runs_dir.is_dir() else []
    return [json.loads(path.read_text()) for path in manifests]


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
