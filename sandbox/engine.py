"""The Docker engine: find one that answers, or start (and later stop) Debian's dockerd.

On a machine where Docker already runs (or ``DOCKER_HOST`` names an engine) we only use it.
When nothing answers on the default socket and we are root, we install Debian's ``docker.io``
if needed and start ``dockerd`` ourselves, detached (``setsid``), with the flags measured in
ENVIRONMENT.md: no bridge and no iptables changes, so host networking is left alone (the
sandbox uses ``network_mode="none"`` anyway) and log files are capped.

Only an engine we started is ever stopped, by the PID we saved. Several optfolio commands may
share it (``make test`` and ``make demo`` at once): each holds a *lease* while it runs, and the
engine is stopped when the last lease goes away, if a command that started it asked for that.
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
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from optfolio import owners
from optfolio.errors import ServiceUnavailable

DOCKERD_FLAGS = (
    "--bridge=none",
    "--iptables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--log-opt",
    "max-size=1m",
    "--log-opt",
    "max-file=1",
)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 45.0
# API calls that should answer at once; long ones (wait, build) pass their own timeout.
CLIENT_TIMEOUT_S = 60

STATE_DIR = Path(os.environ.get("OPTFOLIO_ENGINE_STATE_DIR", "/run/optfolio-engine"))
PID_FILE = STATE_DIR / "dockerd.pid"
LOG_FILE = STATE_DIR / "dockerd.log"
LEASE_DIR = STATE_DIR / "leases"
# Present while the engine we started should stop once the last lease is released.
AUTOSTOP_FILE = STATE_DIR / "autostop"
LOCK_FILE = STATE_DIR / "lock"


@dataclass(frozen=True)
class EngineStatus:
    answering: bool
    host: str  # DOCKER_HOST, or the default socket
    server_version: str | None
    api_version: str | None
    started_pid: int | None  # dockerd we started and that still runs
    detail: str = ""


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def _client_or_none(timeout: int = CLIENT_TIMEOUT_S) -> tuple[docker.DockerClient | None, str]:
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client, ""
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        return None, str(error)


def client(timeout: int = CLIENT_TIMEOUT_S) -> docker.DockerClient:
    """A client for an engine that answers now; ServiceUnavailable otherwise."""
    found, why = _client_or_none(timeout)
    if found is None:
        raise ServiceUnavailable(
            f"no Docker engine answers at {docker_host()} ({why.splitlines()[0] if why else '?'});"
            " run `optfolio sandbox engine start` (as root) or start Docker"
        )
    return found


def _pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A recycled PID belongs to some other program: not ours to signal.
    return b"dockerd" in cmdline


def _started_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def status() -> EngineStatus:
    found, why = _client_or_none(timeout=10)
    if found is None:
        return EngineStatus(False, docker_host(), None, None, _started_pid(), why)
    version = found.version()
    found.close()
    return EngineStatus(
        True,
        docker_host(),
        version.get("Version"),
        version.get("ApiVersion"),
        _started_pid(),
    )


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def apt_install(*packages: str) -> None:
    """Install Debian packages (root only): how a fresh machine gets dockerd and mmdebstrap."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceUnavailable(
            f"{', '.join(packages)} not installed and this is not a root Debian shell;"
            " install them, or start Docker yourself"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            raise ServiceUnavailable(f"`{' '.join(command)}` failed: {tail[0]}")


def start() -> bool:
    """Make an engine answer. True if this call started dockerd, False if one already ran."""
    if _client_or_none(timeout=10)[0] is not None:
        return False
    if "DOCKER_HOST" in os.environ:
        # The user chose an engine; starting a local one would not make that one answer.
        raise ServiceUnavailable(f"no Docker engine answers at DOCKER_HOST={docker_host()}")
    if os.geteuid() != 0:
        raise ServiceUnavailable(
            f"no Docker engine answers at {docker_host()} and only root may start one here;"
            " start Docker, or set DOCKER_HOST"
        )
    with _state_lock():
        # Another command may have started it while we waited for the lock.
        if _client_or_none(timeout=10)[0] is not None:
            return False
        if shutil.which("dockerd") is None:
            apt_install("docker.io")
        pid = _started_pid()
        process = None
        if pid is None:
            with LOG_FILE.open("ab") as log:
                process = subprocess.Popen(
                    ["dockerd", *DOCKERD_FLAGS],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # setsid: survives this command and its Ctrl-C
                    close_fds=True,
                )
            pid = process.pid
            PID_FILE.write_text(f"{pid}\n")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _client_or_none(timeout=5)[0] is not None:
                return True
            # Right after fork the child's cmdline is not yet dockerd's: ask the Popen.
            if (process.poll() is not None) if process else not _pid_alive(pid):
                break
            time.sleep(0.2)
        tail = LOG_FILE.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise ServiceUnavailable(f"dockerd (pid {pid}) did not answer: {tail[0]} (see {LOG_FILE})")


def stop() -> bool:
    """Stop the dockerd we started (by saved PID). False if we had started none."""
    with _state_lock():
        return _stop_locked()


def _stop_locked() -> bool:
    AUTOSTOP_FILE.unlink(missing_ok=True)
    pid = _started_pid()
    if pid is None:
        PID_FILE.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    # Reap it if it is our child (started in this very process); harmless otherwise.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    PID_FILE.unlink(missing_ok=True)
    return True


def _live_leases() -> list[Path]:
    if not LEASE_DIR.is_dir():
        return []
    live = []
    for lease in LEASE_DIR.iterdir():
        # A lease is named for its holder's owner identity, so a recycled PID keeps no lease.
        holder = owners.Owner.parse(lease.name)
        if holder is not None and holder.alive() is False:
            lease.unlink(missing_ok=True)  # its command died without releasing
        else:
            live.append(lease)
    return live


@contextlib.contextmanager
def session() -> Iterator[docker.DockerClient]:
    """An engine for the duration of a command; stopped afterwards only if we started it.

    Quick when the engine already runs (one ping). When another session is still running,
    the engine stays up and the last session out stops it.
    """
    started = start()
    lease = LEASE_DIR / str(owners.current())
    if started or _started_pid() is not None:
        with _state_lock():
            LEASE_DIR.mkdir(parents=True, exist_ok=True)
            lease.touch()
            if started:
                AUTOSTOP_FILE.touch()
    engine = client()
    try:
        yield engine
    finally:
        engine.close()
        if lease.exists():
            with _state_lock():
                lease.unlink(missing_ok=True)
                if AUTOSTOP_FILE.exists() and not _live_leases():
                    _stop_locked()


def keep_running() -> None:
    """An explicit `engine start` wants the engine to outlive the sessions that use it."""
    with _state_lock():
        AUTOSTOP_FILE.unlink(missing_ok=True)
