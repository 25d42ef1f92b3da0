"""Cleanup on every path out: containers and job directories never outlive their owner.

Every sandbox container carries labels naming its owner (host, PID and the PID's start time,
so a recycled PID is not mistaken for the owner: ``optfolio.owners``). Normal paths remove a
container in a ``finally``; Ctrl-C and interpreter exit remove whatever this process still
tracks; and a process that was killed outright leaves labelled containers that the next start
on the same host removes (``remove_leftovers``). Containers owned by live processes are left
alone, so concurrent optfolio processes do not remove each other's work.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import threading
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from optfolio import owners

LABEL = "optfolio.sandbox"
OWNER_LABEL = "optfolio.sandbox.owner"
# Job directories (bind-mounted read-only at /code), one subdirectory per owner.
JOBS_ROOT = Path(tempfile.gettempdir()) / "optfolio-sandbox"


def owner_id(pid: int | None = None) -> str:
    return str(owners.current(pid))


def owner_alive(owner: str) -> bool:
    """Whether the owner still runs. Owners on other hosts (a remote engine serves several
    machines) and names this version did not write are assumed alive: only their own host
    can tell, and removing a live run's container would fail its work."""
    parsed = owners.Owner.parse(owner)
    return parsed is None or parsed.alive() is not False


def labels() -> dict[str, str]:
    return {LABEL: "1", OWNER_LABEL: owner_id()}


def owner_jobs_dir() -> Path:
    path = JOBS_ROOT / owner_id()
    path.mkdir(parents=True, exist_ok=True)
    # The container's non-root user must traverse to its own (read-only) job directory.
    for directory in (JOBS_ROOT, path):
        directory.chmod(0o755)
    return path


def remove_container(container: Container) -> None:
    """Force-remove (kills it if running); already gone is fine."""
    with contextlib.suppress(docker.errors.NotFound):
        try:
            container.remove(force=True)
        except docker.errors.APIError as error:
            # 409: a removal is already in progress (another path out got there first).
            if error.status_code != 409:
                raise


class Tracker:
    """The containers this process has alive, removed at exit or on demand (Ctrl-C)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._containers: dict[str, Container] = {}

    def add(self, container: Container) -> None:
        with self._lock:
            self._containers[container.id] = container

    def discard(self, container: Container) -> None:
        with self._lock:
            self._containers.pop(container.id, None)

    def remove_all(self) -> int:
        with self._lock:
            containers = list(self._containers.values())
            self._containers.clear()
        removed = 0
        for container in containers:
            try:
                remove_container(container)
                removed += 1
            except (docker.errors.DockerException, requests.RequestException):
                # Not removed (an engine refusing while the container is still starting, say):
                # kept, so the next sweep tries again instead of the container running its job
                # to the end untracked.
                self.add(container)
        return removed


TRACKER = Tracker()


def _at_exit() -> None:
    TRACKER.remove_all()
    shutil.rmtree(JOBS_ROOT / owner_id(), ignore_errors=True)


atexit.register(_at_exit)


def remove_leftovers(client: docker.DockerClient) -> int:
    """Remove sandbox containers and job directories of owners that are gone; return the count."""
    removed = 0
    for summary in _sandbox_container_summaries(client, {"label": LABEL}):
        owner = (summary.get("Labels") or {}).get(OWNER_LABEL, "")
        if not owner_alive(owner):
            with contextlib.suppress(docker.errors.DockerException):
                remove_container(client.containers.prepare_model(summary))
                removed += 1
    if JOBS_ROOT.is_dir():
        for directory in JOBS_ROOT.iterdir():
            if not owner_alive(directory.name):
                shutil.rmtree(directory, ignore_errors=True)
    return removed


def remove_own(client: docker.DockerClient) -> int:
    """Remove every container this process owns, tracked or not (one a worker has created
    but not yet tracked, say); the count removed."""
    removed = 0
    for summary in _sandbox_container_summaries(client, {"label": f"{OWNER_LABEL}={owner_id()}"}):
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            remove_container(client.containers.prepare_model(summary))
            removed += 1
    return removed


def list_sandbox_containers(client: docker.DockerClient, owner: str | None = None) -> list[str]:
    """IDs of sandbox containers (of one owner, if given), running or not."""
    filters = {"label": [LABEL] + ([f"{OWNER_LABEL}={owner}"] if owner else [])}
    return [summary["Id"] for summary in _sandbox_container_summaries(client, filters)]


def _sandbox_container_summaries(
    client: docker.DockerClient, filters: dict[str, object]
) -> list[dict[str, object]]:
    """The engine's list entries. Not ``containers.list()``: it inspects each container after
    listing, and one removed in between (by its own run, or another run's cleanup) raises
    NotFound."""
    return client.api.containers(all=True, filters=filters)
