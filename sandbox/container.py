"""One single-use container: start it (empty), give it one candidate, collect, destroy.

Starting and running are separate steps so the warm pool can start containers ahead of time.
The candidate's code never goes through argv (which fails above 128 KiB) and the host
environment is never passed. The code reaches the container one of two ways (``delivery``):

* ``bind``: a file in a read-only bind mount of a host job directory, with a job file the
  runner polls for. Needs the engine to see this host's files: a local engine only.
* ``copy``: copy-in through the container's stdin (attached once, closed after the job), so
  no host path is involved: works with an engine on another machine (``DOCKER_HOST=tcp://…``
  or ``ssh://…``). A read-only root refuses ``put_archive``, hence stdin.

``copy`` is the default: it costs the same as a bind mount (bench/sandbox_throughput.py
measured copy-in at 1.19x the bind mount's throughput cold and 1.05x warm, within the machine's
noise), so one path serves local and remote engines alike; ``OPTFOLIO_SANDBOX_DELIVERY=bind``
keeps the bind mount for a local engine. Every path out of ``run_in`` removes the container and
its job directory.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import LogConfig, Mount

from sandbox import cleanup
from sandbox.limits import HOST_GRACE_S, IDLE_EXIT_S, LOG_MAX_SIZE, Limits
from sandbox.result import ExecResult, Status

FRAME_MARKER = b"@@optfolio-sandbox-result@@"  # must match runner.py
RUNNER = ["/opt/venv/bin/python", "-I", "/opt/optfolio/runner.py"]
CODE_DIR = "/code"
USER = "10001:10001"
DELIVERY_ENV = "OPTFOLIO_SANDBOX_DELIVERY"
Delivery = Literal["bind", "copy"]
# Errors that mean the engine, not the candidate, failed.
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


@dataclass
class Slot:
    """A started container waiting for its one job."""

    container: Container
    job_dir: Path | None  # bind delivery only
    image: str
    limits: Limits  # memory, CPUs, pids and tmpfs sizes are fixed when the container starts


def is_local_engine(client: docker.DockerClient) -> bool:
    """Whether the engine sits on this machine's unix socket (and so sees its files)."""
    return str(client.api.base_url).startswith("http+docker://localhost")


def delivery_for(client: docker.DockerClient) -> Delivery:
    """How code reaches containers of this engine: copy-in (any engine), unless
    ``$OPTFOLIO_SANDBOX_DELIVERY=bind`` asks for bind mounts, which only a local engine has."""
    chosen = os.environ.get(DELIVERY_ENV, "copy")
    if chosen not in ("bind", "copy"):
        raise ValueError(f"{DELIVERY_ENV}={chosen!r}: use copy or bind")
    if chosen == "bind" and not is_local_engine(client):
        raise ValueError(f"{DELIVERY_ENV}=bind needs an engine on a local unix socket")
    return chosen  # type: ignore[return-value]


def container_config(image: str, limits: Limits, job_dir: Path | None) -> dict[str, Any]:
    """The isolation settings: everything ``containers.create`` gets. Without a job directory
    the job comes through stdin (copy delivery) and nothing of the host is mounted."""
    source = "dir" if job_dir is not None else "stdin"
    return {
        "image": image,
        "command": RUNNER,
        "user": USER,
        "working_dir": "/work",
        "hostname": "sandbox",
        # Only these variables: the image's ENV plus this; nothing from the host.
        "environment": {"OPTFOLIO_IDLE_EXIT_S": str(IDLE_EXIT_S), "OPTFOLIO_JOB_SOURCE": source},
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/work": f"size={limits.work_tmpfs_mb}m,mode=1777,noexec,nosuid,nodev",
            "/tmp": f"size={limits.tmp_tmpfs_mb}m,mode=1777,noexec,nosuid,nodev",
        },
        "mounts": (
            [Mount(target=CODE_DIR, source=str(job_dir), type="bind", read_only=True)]
            if job_dir is not None
            else []
        ),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": limits.pids,
        "mem_limit": f"{limits.memory_mb}m",
        "memswap_limit": f"{limits.memory_mb}m",  # equal: no swap
        "nano_cpus": int(limits.cpus * 1e9),
        "ipc_mode": "private",
        "log_config": LogConfig(
            type=LogConfig.types.JSON, config={"max-size": LOG_MAX_SIZE, "max-file": "1"}
        ),
        "labels": cleanup.labels(),
        # Copy delivery: stdin open, closed for good after the first attach (the SDK sets
        # StdinOnce only when not detached; create() starts nothing either way).
        "stdin_open": job_dir is None,
        "detach": job_dir is not None,
    }


def start_container(
    client: docker.DockerClient, image: str, limits: Limits, delivery: Delivery | None = None
) -> Slot:
    """Create and start an empty container; its runner waits for a job."""
    job_dir = None
    if (delivery or delivery_for(client)) == "bind":
        job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=cleanup.owner_jobs_dir()))
        job_dir.chmod(0o755)
    container: Container | None = None
    try:
        container = client.containers.create(**container_config(image, limits, job_dir))
        cleanup.TRACKER.add(container)
        container.start()
        return Slot(container, job_dir, image, limits)
    except BaseException:
        if container is not None:
            discard(container)
        remove_job_dir(job_dir)
        raise


def remove_job_dir(job_dir: Path | None) -> None:
    if job_dir is not None:
        shutil.rmtree(job_dir, ignore_errors=True)


def discard(container: Container) -> None:
    cleanup.TRACKER.discard(container)
    with contextlib.suppress(*ENGINE_ERRORS):
        cleanup.remove_container(container)


def _write_atomically(path: Path, data: bytes) -> None:
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    scratch.write_bytes(data)
    scratch.chmod(0o644)
    os.replace(scratch, path)


def deliver(slot: Slot, code: str, limits: Limits) -> None:
    """Hand the job over: the code first, then the job the runner waits for."""
    data = code.encode("utf-8", errors="surrogateescape")
    job: dict[str, Any] = {
        "main": "main.py",
        "timeout_s": limits.timeout_s,
        "stdout_cap": limits.stdout_cap,
        "stderr_cap": limits.stderr_cap,
    }
    if slot.job_dir is None:
        _copy_in(slot.container, json.dumps(job | {"code_bytes": len(data)}).encode(), data)
        return
    _write_atomically(slot.job_dir / "main.py", data)
    _write_atomically(slot.job_dir / "job.json", json.dumps(job).encode())


def _copy_in(container: Container, header: bytes, code: bytes) -> None:
    """Write the job line and the code to the container's stdin, then end it (EOF)."""
    attached = container.client.api.attach_socket(container.id, params={"stdin": 1, "stream": 1})
    raw: socket.socket = getattr(attached, "_sock", attached)
    try:
        raw.sendall(header + b"\n" + code)
        raw.shutdown(socket.SHUT_WR)  # with StdinOnce, the engine closes the runner's stdin
    finally:
        attached.close()


def _frame(log: bytes) -> dict[str, Any] | None:
    # The runner writes its frame last; anything a candidate forged comes before it.
    at = log.rfind(FRAME_MARKER)
    if at < 0:
        return None
    line = log[at + len(FRAME_MARKER) :].split(b"\n", 1)[0]
    try:
        frame = json.loads(line)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) and "reason" in frame else None


def _shell_exit_code(code: int | None) -> int | None:
    # subprocess reports death by signal N as -N; the shell (and Docker) say 128 + N.
    return None if code is None else (128 - code if code < 0 else code)


def run_in(slot: Slot, code: str, limits: Limits) -> ExecResult:
    """Run one candidate in a started container and destroy the container, on every path."""
    container = slot.container
    started = time.monotonic()
    host_timeout = False
    try:
        deliver(slot, code, limits)
        try:
            container.wait(timeout=limits.timeout_s + HOST_GRACE_S)
        except requests.exceptions.RequestException:
            # The runner should have stopped the candidate at timeout_s: it is stuck.
            host_timeout = True
            container.kill()
            container.wait(timeout=30)
        runtime_s = time.monotonic() - started
        container.reload()
        state = container.attrs["State"]
        frame = _frame(container.logs(stdout=True, stderr=False))
        if frame is None:
            runner_err = container.logs(stdout=False, stderr=True)[-2000:]
            return _without_frame(slot, state, host_timeout, runtime_s, runner_err)
        return _from_frame(slot, frame, bool(state.get("OOMKilled")))
    except ENGINE_ERRORS as error:
        message = f"sandbox failed: {type(error).__name__}: {error}"
        return ExecResult.sandbox_error(message, slot.image)
    finally:
        discard(container)
        remove_job_dir(slot.job_dir)


def _from_frame(slot: Slot, frame: dict[str, Any], oom_killed: bool) -> ExecResult:
    exit_code = _shell_exit_code(frame.get("exit_code"))
    stdout = base64.b64decode(frame.get("stdout_b64", ""))
    stderr = base64.b64decode(frame.get("stderr_b64", ""))
    reason = frame["reason"]
    status: Status
    if oom_killed and exit_code != 0:
        status = "oom"
    elif reason == "timeout":
        status = "timeout"
    elif reason == "output_limit":
        status = "output_limit"
    elif reason == "exit":
        status = "ok" if exit_code == 0 else "error"
    else:
        detail = f": {frame['error']}" if frame.get("error") else ""
        return ExecResult.sandbox_error(f"runner reported {reason!r}{detail}", slot.image)
    return ExecResult.from_output(
        status=status,
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=int(frame.get("stdout_bytes", 0)) > len(stdout),
        stderr_truncated=int(frame.get("stderr_bytes", 0)) > len(stderr),
        runtime_s=float(frame["runtime_s"]),
        image=slot.image,
    )


def _without_frame(
    slot: Slot, state: dict[str, Any], host_timeout: bool, runtime_s: float, runner_err: bytes
) -> ExecResult:
    # The runner itself died or was stuck: report what the engine knows.
    exit_code = state.get("ExitCode")
    status: Status
    if host_timeout:
        status = "timeout"
    elif state.get("OOMKilled"):
        status = "oom"
    else:
        message = runner_err.decode("utf-8", errors="replace").strip()
        return ExecResult.sandbox_error(
            f"sandbox runner ended without a result (exit {exit_code}): {message}", slot.image
        )
    return ExecResult.from_output(
        status=status,
        exit_code=exit_code,
        stdout=b"",
        stderr=b"",
        stdout_truncated=False,
        stderr_truncated=False,
        runtime_s=runtime_s,
        image=slot.image,
    )
