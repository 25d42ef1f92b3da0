"""Run-scoped local endpoint: with no endpoint configured, start ``serve-local`` on loopback
for the run and stop it afterwards.

The server is a child process (``python -m servers.local_model.server``) so a crash in native
code cannot take the run down, and the run's client talks to it over the same OpenAI API as
to any remote endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from optfolio.errors import ServiceUnavailable
from optfolio.llm.settings import LOCAL_API_KEY, LLMSettings
from optfolio.run_config import ModelEndpoint, PortfolioRunParameters

_START_TIMEOUT_S = 180.0  # loading 1 GB of weights on a loaded 2-core machine
_STOP_TIMEOUT_S = 10.0


@contextlib.contextmanager
def local_endpoint(
    settings: LLMSettings | None = None,
    *,
    models: Sequence[str] | None = None,
    port: int | None = None,
    threads: int | None = None,
    pull: bool = True,
) -> Iterator[LLMSettings]:
    """Yield settings pointing at a working endpoint.

    If ``settings`` already names an endpoint (``OPENAI_BASE_URL`` or explicit), they are
    yielded unchanged and nothing is started. Otherwise the local server is started with
    ``models`` (default: ``settings.model``; the first one answers requests that name no
    loaded model) and stopped when the block ends, whatever way it ends.
    """
    settings = settings or LLMSettings.from_env()
    if not settings.is_local:
        yield settings
        return
    names = list(models or [settings.model])
    if pull:
        from servers.local_model.registry import KNOWN_MODELS
        from servers.local_model.registry import pull as pull_model

        for name in names:
            if name in KNOWN_MODELS:
                pull_model(name)
    with LocalServer(names, port=port, threads=threads) as server:
        # No longer timeout for minutes of CPU decoding: serve-local sends progress bytes while
        # it works, so the read timeout only ends a wait on a stalled server.
        yield settings.with_endpoint(server.base_url, LOCAL_API_KEY)


class LocalServer:
    """A ``serve-local`` child process; ``base_url`` is valid between start and stop."""

    def __init__(
        self,
        models: Sequence[str],
        *,
        port: int | None = None,
        threads: int | None = None,
        nice: int | None = None,
    ) -> None:
        self.models = list(models)
        self.port = port or free_port()
        self.threads = threads
        self.nice = nice  # None: serve-local's own default (priority.SERVER_NICE)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        command = [
            sys.executable,
            "-m",
            "servers.local_model.server",
            "--port",
            str(self.port),
            "--exit-with-parent",
        ]
        for model in self.models:
            command += ["--model", model]
        if self.threads:
            command += ["--threads", str(self.threads)]
        if self.nice is not None:
            command += ["--nice", str(self.nice)]
        handle, name = tempfile.mkstemp(prefix="optfolio-serve-local-", suffix=".log")
        self._log_path = Path(name)
        with os.fdopen(handle, "wb") as log:
            # Own session: a Ctrl-C meant for the run still lets us stop it cleanly, and the
            # server can raise its session's CPU group without touching the user's shell.
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServiceUnavailable(
                    f"local model server exited with status {self._process.returncode}:"
                    f" {self._last_log_line()}"
                )
            if health_ok(self.base_url):
                return
            time.sleep(0.2)
        self.stop()
        raise ServiceUnavailable(f"local model server not ready after {timeout_s:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def _last_log_line(self) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return "(no log)"
        lines = self._log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(empty log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_health(base_url: str) -> dict[str, Any]:
    """serve-local's ``/health`` (beside ``/v1``): queue, the request decoding, recent ones."""
    root = base_url.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/health", timeout=10) as response:
        return json.load(response)


def health_ok(base_url: str) -> bool:
    """The server's health endpoint answers 200 (``/health`` beside ``/v1``)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


ROLES = ("generator", "evaluator", "judge")


@contextlib.contextmanager
def role_endpoints(parameters: PortfolioRunParameters) -> Iterator[dict[str, ModelEndpoint]]:
    """Concrete endpoints for the three roles. Roles with neither a base URL nor
    ``$OPENAI_BASE_URL`` share one embedded local server, started here and stopped after."""
    configured = {role: getattr(parameters, role) for role in ROLES}
    environment_url = os.environ.get("OPENAI_BASE_URL") or None
    local_roles = [r for r, e in configured.items() if not (e.base_url or environment_url)]
    # Copies, so what else a role names (its API key's Secret block) comes along.
    resolved = {
        role: e.model_copy(update={"base_url": e.base_url or environment_url})
        for role, e in configured.items()
    }
    if not local_roles:
        yield resolved
        return
    models = list(dict.fromkeys(configured[r].model for r in local_roles))
    with local_endpoint(LLMSettings(model=models[0]), models=models) as local:
        for role in local_roles:
            # CPU decoding of n long answers takes many minutes: the local settings' timeout
            resolved[role] = configured[role].model_copy(
                update={
                    "base_url": local.base_url,
                    "timeout_s": configured[role].timeout_s or local.timeout_s,
                }
            )
        yield resolved
