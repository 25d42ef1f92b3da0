"""A second, private Docker engine for tests that stop an engine or need a ``DOCKER_HOST``
other than the default socket. Real ``dockerd``, never a mock; the session's main engine
(which other work on the machine shares) is never touched.

The engine runs with its own socket, data root, exec root and pidfile, and the same
networking-neutral flags as ``sandbox.engine`` (no bridge, no iptables). Its data roots are
kept between sessions in *slots* under ``$OPTFOLIO_SECOND_ENGINE_DIR`` (default
``/var/tmp/optfolio-second-engine``): a session locks the first free slot (``flock``), so
two test sessions on one machine never share a data root, and the sandbox image (copied in
with ``docker save | docker load`` from the main engine, ~700 MB) is loaded only once per
slot instead of once per session.

Fixtures:

* ``second_engine`` (session): a :class:`SecondEngine`, running, image loaded; tests that
  stop it (``stop()``) must ``start()`` it again (``ensure_running()`` does it if needed).
* ``second_docker_engine`` (session): its ``DOCKER_HOST`` URL, e.g.
  ``unix:///var/tmp/optfolio-second-engine/slot-0/docker.sock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import docker
import docker.errors
import pytest
import requests.exceptions

from sandbox.engine import DOCKERD_FLAGS
from tests.plugins.ci import prerequisite_missing

ROOT = Path(os.environ.get("OPTFOLIO_SECOND_ENGINE_DIR", "/var/tmp/optfolio-second-engine"))
SLOTS = 4
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 45.0


class SecondEngine:
    """One private dockerd in ``directory``: start, stop (SIGTERM, by its own PID), ping."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.directory / "dockerd.log"

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def answers(self) -> bool:
        try:
            with contextlib.closing(self.client(timeout=5)) as client:
                return bool(client.ping())
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None and self.answers():
            return
        self._kill_stale()
        self.socket.unlink(missing_ok=True)
        command = [
            "dockerd",
            *DOCKERD_FLAGS,
            "--host",
            self.host,
            "--data-root",
            str(self.directory / "data"),
            "--exec-root",
            str(self.directory / "exec"),
            "--pidfile",
            str(self.directory / "docker.pid"),
        ]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"second dockerd at {self.host} did not answer: {tail}")

    def stop(self) -> None:
        """Stop the engine as an administrator would (SIGTERM), waiting until it is gone.
        Its containers die with it (no live-restore)."""
        if self.process is None or self.process.poll() is not None:
            self._kill_stale()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def ensure_running(self) -> None:
        if not self.answers():
            self.start()

    def _kill_stale(self) -> None:
        # A dockerd of an earlier, killed session of this slot (we hold the slot's lock).
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.directory / "docker.pid").read_text().strip())
            if b"dockerd" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_TIMEOUT_S
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    time.sleep(0.1)

    def load_image(self, tag: str, source: docker.DockerClient) -> None:
        """Copy ``tag`` from the main engine unless this engine has it already."""
        with contextlib.closing(self.client(timeout=900)) as mine:
            with contextlib.suppress(docker.errors.ImageNotFound):
                mine.images.get(tag)
                return
            source.images.get(tag)  # fails clearly if the main engine lacks it
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "--host", self.host, "load", "--quiet"],
            stdin=save.stdout,
            capture_output=True,
            check=False,
        )
        if save.stdout is not None:
            save.stdout.close()
        save_rc = save.wait()
        if save_rc != 0 or load.returncode != 0:
            raise RuntimeError(f"docker save|load of {tag} failed: {load.stderr.decode()[-300:]}")


def _lock_free_slot() -> tuple[Path, IO[str]]:
    ROOT.mkdir(parents=True, exist_ok=True)
    for index in range(SLOTS):
        directory = ROOT / f"slot-{index}"
        directory.mkdir(exist_ok=True)
        handle = (directory / "lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return directory, handle
    raise RuntimeError(f"all {SLOTS} second-engine slots under {ROOT} are in use")


@pytest.fixture(scope="session")
def second_engine(sandbox_image: str, docker_client: docker.DockerClient) -> Iterator[SecondEngine]:
    """A private dockerd with the sandbox image; stopped at the end of the session."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        prerequisite_missing("a second Docker engine needs root and dockerd")
    directory, lock = _lock_free_slot()
    engine = SecondEngine(directory)
    try:
        engine.start()
        engine.load_image(sandbox_image, docker_client)
        yield engine
    finally:
        try:
            engine.stop()
        finally:
            lock.close()


@pytest.fixture(scope="session")
def second_docker_engine(second_engine: SecondEngine) -> str:
    """``DOCKER_HOST`` of the private engine (running, sandbox image loaded)."""
    return second_engine.host
