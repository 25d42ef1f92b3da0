"""A local Prefect stack: server on loopback, work pools, deployments, one worker per pool.

Driven entirely through the ``prefect`` CLI and the server's REST API (stdlib ``urllib``), so
this module imports no Prefect and the domain library stays Prefect-free.

Everything lives under one *home* directory: ``prefect/`` (``PREFECT_HOME``: the SQLite
database, results), one PID file and one log per process, and ``port``. Processes start in their
own session (``setsid``) so they outlive the command and its Ctrl-C, and are stopped by process
group: the worker's flow-run subprocesses go with it, and nothing depends on shell job control
(a worker started with ``&`` from a script ignores SIGTERM, see ENVIRONMENT.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from optfolio.errors import InputError, ServiceUnavailable
from optfolio.settings import PREFECT_OFFLINE_DEFAULTS, REPO_ROOT

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
DEPLOYMENTS_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
# The server takes 5-20 s to answer on a loaded 2-core machine; deploys ~5 s each.
SERVER_START_TIMEOUT_S = 180.0
WORKER_START_TIMEOUT_S = 120.0
CLI_TIMEOUT_S = 300.0
# The worker turns its first SIGTERM into a SIGINT and may then linger; a second SIGTERM
# makes it SIGKILL itself. SIGKILL for the whole group is the last resort.
GRACE_S = 15.0

# Failure notification: flow runs carrying this tag (the nightly deployments' tag in the
# deployments file) are watched; the webhook URL comes from `up --notify-url`, else from this
# Prefect Variable, else from the notification block an earlier `up` created.
NIGHTLY_TAG = "nightly"
NOTIFY_URL_VARIABLE = "optfolio_notify_url"
# Prefect's own notification block that POSTs JSON to any URL (Slack's incoming webhooks
# included); "webhook" is a plain HTTP block without the notify capability automations need.
NOTIFICATION_BLOCK_TYPE = "custom-webhook"
NOTIFICATION_BLOCK = "optfolio-nightly-failure"
FAILURE_AUTOMATION = "optfolio: a nightly flow run failed or crashed"
# The names Prefect gives failing final states (TimedOut: a flow over its timeout).
FAILURE_EVENTS = [
    "prefect.flow-run.Failed",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.TimedOut",
]
# Jinja, rendered by the server with the flow run, its flow and its deployment.
FAILURE_SUBJECT = (
    "optfolio: {{ deployment.name }} run {{ flow_run.name }} {{ flow_run.state.name }}"
)
FAILURE_BODY = """\
Flow run {{ flow.name }}/{{ flow_run.name }} of deployment {{ deployment.name }} ended \
{{ flow_run.state.name }} at {{ flow_run.state.timestamp }}.
State message: {{ flow_run.state.message }}
Flow run: {{ flow_run|ui_url }}
Its Retry button resumes the same optfolio run (same run id): nothing paid for is paid again.
"""
# A loaded server answers 503 when its database times out (and rolls back): ask again, as
# Prefect's own client does.
API_ATTEMPTS = 6

Log = Callable[[str], None]


def default_home() -> Path:
    """``$OPTFOLIO_SERVER_HOME``, else ``~/.optfolio/server``."""
    configured = os.environ.get("OPTFOLIO_SERVER_HOME")
    return Path(configured) if configured else Path.home() / ".optfolio" / "server"


@dataclass(frozen=True)
class Service:
    """One background process of the stack: its PID file and log under the home."""

    name: str  # "server" or "worker-<pool>"
    home: Path

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID we saved, if that process still runs and is still a ``prefect`` command."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # A recycled PID belongs to some other program: never ours to signal.
        return pid if b"prefect" in cmdline else None


@dataclass(frozen=True)
class StackStatus:
    home: Path
    port: int | None
    server_pid: int | None
    healthy: bool
    workers: dict[str, int | None]  # pool -> worker PID (None: not running)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return ui_url(self.port or DEFAULT_PORT)


def ui_url(port: int) -> str:
    # The v2 UI is the default at "/"; pointing log links at it avoids the v1 pages.
    return f"http://{HOST}:{port}/v2"


def work_pools(deployments_file: Path = DEPLOYMENTS_FILE) -> list[str]:
    """The work pools the deployments file names, in order of first use."""
    try:
        spec = yaml.safe_load(deployments_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"{deployments_file}: {error}") from error
    pools: list[str] = []
    for deployment in spec.get("deployments") or []:
        name = (deployment.get("work_pool") or {}).get("name")
        if not name:
            raise InputError(
                f"{deployments_file}: deployment {deployment.get('name')!r}: no work_pool.name"
            )
        if name not in pools:
            pools.append(name)
    if not pools:
        raise InputError(f"{deployments_file}: no deployments")
    return pools


def stack_env(port: int, home: Path) -> dict[str, str]:
    """The environment for every process of the stack and for ``prefect`` CLI calls."""
    env = dict(os.environ)
    for name, value in PREFECT_OFFLINE_DEFAULTS.items():
        env.setdefault(name, value)
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_API_URL=f"http://{HOST}:{port}/api",
        PREFECT_UI_URL=ui_url(port),
        # A profile or an outer test harness must not point the CLI at another server.
        PREFECT_SERVER_API_HOST=HOST,
        PREFECT_SERVER_API_PORT=str(port),
    )
    return env


def prefect_command(*args: str) -> list[str]:
    # The interpreter running optfolio, so the worker's flow runs import this same install.
    return [sys.executable, "-m", "prefect", *args]


def _get_json(url: str, timeout: float = 5.0) -> object | None:
    """GET a JSON document; None on 404. Connection errors propagate as OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def _post_json(url: str, body: object, timeout: float = 10.0) -> object:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _api(port: int, method: str, path: str, body: object = None) -> object | None:
    """One REST call to the server on PORT; None on 404 or an empty answer."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}/api{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    for attempt in range(1, API_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=30.0) as response:
                payload = response.read()
            return json.loads(payload) if payload else None
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            if error.code not in {429, 503} or attempt == API_ATTEMPTS:
                detail = error.read().decode(errors="replace")[:500]
                raise ServiceUnavailable(
                    f"Prefect API {method} {path}: HTTP {error.code}: {detail}"
                ) from None
        time.sleep(2.0 * attempt)
    raise AssertionError("unreachable")


def server_healthy(port: int) -> bool:
    try:
        return _get_json(f"http://{HOST}:{port}/api/health", timeout=3.0) is True
    except (OSError, ValueError):
        return False


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((HOST, port)) == 0


def _saved_port(home: Path) -> int | None:
    try:
        return int((home / "port").read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _spawn(service: Service, command: list[str], env: dict[str, str]) -> int:
    service.home.mkdir(parents=True, exist_ok=True)
    with service.log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stoppable as a whole, survives Ctrl-C
            close_fds=True,
        )
    service.pid_file.write_text(f"{process.pid}\n")
    return process.pid


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (a test's stack), so a zombie does not look alive.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return not _alive(pid)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def stop_service(service: Service, log: Log) -> bool:
    """Stop one service by process group: SIGTERM, again SIGTERM, then SIGKILL."""
    pid = service.pid()
    if pid is None:
        service.pid_file.unlink(missing_ok=True)
        return False
    for signum, wait_s in (
        (signal.SIGTERM, GRACE_S),
        (signal.SIGTERM, 5.0),
        (signal.SIGKILL, 10.0),
    ):
        _signal_group(pid, signum)
        if _wait_gone(pid, wait_s):
            break
    else:
        raise ServiceUnavailable(f"{service.name} (pid {pid}) did not stop, even on SIGKILL")
    # Children that left the group's leader behind (flow runs) go too.
    _signal_group(pid, signal.SIGKILL)
    service.pid_file.unlink(missing_ok=True)
    log(f"stopped {service.name} (pid {pid})")
    return True


def _run_cli(args: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(
        prefect_command(*args),
        cwd=REPO_ROOT,  # entry points in the deployments file are relative to the repo root
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-8:]
        raise ServiceUnavailable(f"{what} failed (exit {done.returncode}):\n" + "\n".join(tail))
    return done.stdout


def _start_server(port: int, home: Path, env: dict[str, str], log: Log) -> None:
    server = Service("server", home)
    pid = server.pid()
    saved = _saved_port(home)
    if pid is not None and saved is not None and saved != port:
        raise InputError(
            f"the server in {home} already runs on port {saved}; "
            f"`optfolio server down --home {home}` first, or use --port {saved}"
        )
    if pid is None:
        if _port_in_use(port):
            raise ServiceUnavailable(
                f"port {port} on {HOST} is in use by another program; choose --port"
            )
        pid = _spawn(
            server, prefect_command("server", "start", "--host", HOST, "--port", str(port)), env
        )
        (home / "port").write_text(f"{port}\n")
        log(f"started Prefect server (pid {pid}), log {server.log_file}")
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server_healthy(port):
        if not _alive(pid):
            raise ServiceUnavailable(f"the Prefect server exited:\n{_tail(server.log_file)}")
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"the Prefect server did not answer on port {port} within "
                f"{SERVER_START_TIMEOUT_S:.0f} s:\n{_tail(server.log_file)}"
            )
        time.sleep(0.5)


def _ensure_pool(pool: str, port: int, env: dict[str, str], log: Log) -> None:
    if _get_json(f"http://{HOST}:{port}/api/work_pools/{pool}") is not None:
        return  # keep a pool the user may have tuned (concurrency, template)
    _run_cli(["work-pool", "create", pool, "--type", "process"], env, f"creating work pool {pool}")
    log(f"created work pool {pool}")


def apply_deployments(
    port: int, home: Path, deployments_file: Path = DEPLOYMENTS_FILE, log: Log = print
) -> None:
    """Create the work pools and apply every deployment in the file (idempotent)."""
    env = stack_env(port, home)
    for pool in work_pools(deployments_file):
        _ensure_pool(pool, port, env, log)
    _run_cli(
        ["--no-prompt", "deploy", "--all", "--prefect-file", str(deployments_file)],
        env,
        f"applying {deployments_file}",
    )


def _worker_online(pool: str, port: int) -> bool:
    try:
        workers = _post_json(f"http://{HOST}:{port}/api/work_pools/{pool}/workers/filter", {})
    except (OSError, ValueError):
        return False
    return any(worker.get("status") == "ONLINE" for worker in workers)  # type: ignore[union-attr]


def _start_worker(pool: str, port: int, home: Path, env: dict[str, str], log: Log) -> None:
    worker = Service(f"worker-{pool}", home)
    pid = worker.pid()
    if pid is None:
        pid = _spawn(
            worker, prefect_command("worker", "start", "--pool", pool, "--type", "process"), env
        )
        log(f"started worker for {pool} (pid {pid}), log {worker.log_file}")
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while not _worker_online(pool, port):
        if not _alive(pid):
            raise ServiceUnavailable(f"the worker for {pool} exited:\n{_tail(worker.log_file)}")
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"the worker for {pool} did not come online within "
                f"{WORKER_START_TIMEOUT_S:.0f} s:\n{_tail(worker.log_file)}"
            )
        time.sleep(0.5)


def _check_notify_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise InputError(f"notify URL {url!r}: give an http:// or https:// URL")
    return url.strip()


def _webhook_data(url: str) -> dict[str, object]:
    """The notification block's fields: POST JSON to URL (``{{subject}}``/``{{body}}`` are
    the block's own placeholders, filled with the automation's rendered text)."""
    return {
        "name": NOTIFICATION_BLOCK,
        "url": url,
        "method": "POST",
        # `text` is what Slack's incoming webhooks read; other receivers get both parts too.
        "json_data": {
            "text": "{{subject}}\n{{body}}",
            "subject": "{{subject}}",
            "body": "{{body}}",
        },
    }


def _notification_block(port: int) -> dict[str, Any] | None:
    found = _api(
        port,
        "GET",
        f"/block_types/slug/{NOTIFICATION_BLOCK_TYPE}/block_documents/name/{NOTIFICATION_BLOCK}",
    )
    return found if isinstance(found, dict) else None


def _ensure_notification_block(port: int, url: str, log: Log) -> str:
    """Create the webhook block, or point it at URL if it points elsewhere; its id."""
    data = _webhook_data(url)
    existing = _notification_block(port)
    if existing is not None:
        if {key: existing["data"].get(key) for key in data} != data:
            _api(
                port,
                "PATCH",
                f"/block_documents/{existing['id']}",
                {"data": data, "merge_existing_data": False},
            )
            log(f"notification block {NOTIFICATION_BLOCK}: now to {url}")
        return str(existing["id"])
    block_type = _api(port, "GET", f"/block_types/slug/{NOTIFICATION_BLOCK_TYPE}")
    if not isinstance(block_type, dict):
        raise ServiceUnavailable(f"the Prefect server has no {NOTIFICATION_BLOCK_TYPE!r} blocks")
    schemas = _api(
        port,
        "POST",
        "/block_schemas/filter",
        {"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}, "limit": 1},
    )
    if not schemas:
        raise ServiceUnavailable(f"no block schema for {NOTIFICATION_BLOCK_TYPE!r} blocks")
    created = _api(
        port,
        "POST",
        "/block_documents/",
        {
            "name": NOTIFICATION_BLOCK,
            "block_type_id": block_type["id"],
            "block_schema_id": schemas[0]["id"],  # type: ignore[index]
            "data": data,
        },
    )
    log(f"created notification block {NOTIFICATION_BLOCK} (to {url})")
    return str(created["id"])  # type: ignore[index]


def failure_automation(block_document_id: str) -> dict[str, object]:
    """The automation: each flow run tagged NIGHTLY_TAG that ends failed or crashed sends one
    notification through the block (a retry Prefect still makes is not a failure yet)."""
    return {
        "name": FAILURE_AUTOMATION,
        "description": f"Set by `optfolio server up`: a failed or crashed flow run tagged"
        f" {NIGHTLY_TAG!r} notifies the {NOTIFICATION_BLOCK!r} block.",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "match_related": {
                "prefect.resource.role": "tag",
                "prefect.resource.id": f"prefect.tag.{NIGHTLY_TAG}",
            },
            "expect": FAILURE_EVENTS,
            "for_each": ["prefect.resource.id"],  # each flow run on its own
            "threshold": 1,
            "within": 0,
        },
        "actions": [
            {
                "type": "send-notification",
                "block_document_id": block_document_id,
                "subject": FAILURE_SUBJECT,
                "body": FAILURE_BODY,
            }
        ],
    }


def configure_failure_notification(
    port: int, notify_url: str | None = None, log: Log = print
) -> str | None:
    """Notify a webhook when a nightly flow run fails or crashes (idempotent): a Prefect
    notification block to the URL and an automation firing it. The URL: NOTIFY_URL, else the
    Prefect Variable NOTIFY_URL_VARIABLE, else the block's from an earlier call; none: off.
    Returns the automation's id (None: off)."""
    url = notify_url
    if url is None:
        variable = _api(port, "GET", f"/variables/name/{NOTIFY_URL_VARIABLE}")
        value = variable.get("value") if isinstance(variable, dict) else None
        url = value if isinstance(value, str) and value.strip() else None
    if url is None:
        existing = _notification_block(port)
        url = existing["data"].get("url") if existing is not None else None
    if url is None:
        log(
            "failure notifications: off (give --notify-url URL, or set the Prefect Variable"
            f" {NOTIFY_URL_VARIABLE})"
        )
        return None
    block_id = _ensure_notification_block(port, _check_notify_url(url), log)
    spec = failure_automation(block_id)
    found = _api(
        port,
        "POST",
        "/automations/filter",
        {"automations": {"name": {"any_": [FAILURE_AUTOMATION]}}},
    )
    if found:
        automation_id = str(found[0]["id"])  # type: ignore[index]
        _api(port, "PUT", f"/automations/{automation_id}", spec)
    else:
        automation_id = str(_api(port, "POST", "/automations/", spec)["id"])  # type: ignore[index]
    log(f"failure notifications: flow runs tagged {NIGHTLY_TAG!r} that fail notify {url}")
    return automation_id


def up(
    port: int = DEFAULT_PORT,
    home: Path | None = None,
    deployments_file: Path = DEPLOYMENTS_FILE,
    log: Log = print,
    notify_url: str | None = None,
) -> StackStatus:
    """Server, work pools, deployments, failure notification, workers; reuses whatever of it
    already runs."""
    home = (home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = stack_env(port, home)
    pools = work_pools(deployments_file)  # a bad file fails before anything starts
    if notify_url is not None:
        notify_url = _check_notify_url(notify_url)  # refused before anything starts
    _start_server(port, home, env, log)
    apply_deployments(port, home, deployments_file, log)
    log(f"applied the deployments in {deployments_file}")
    configure_failure_notification(port, notify_url, log)
    for pool in pools:
        _start_worker(pool, port, home, env, log)
    return status(home)


def down(home: Path | None = None, log: Log = print) -> bool:
    """Stop the workers, then the server. False if nothing of ours was running."""
    home = (home or default_home()).resolve()
    stopped = False
    # Workers first, so no flow run is picked up while the server goes away.
    for pid_file in sorted(home.glob("worker-*.pid")):
        stopped |= stop_service(Service(pid_file.stem, home), log)
    stopped |= stop_service(Service("server", home), log)
    return stopped


def status(home: Path | None = None) -> StackStatus:
    home = (home or default_home()).resolve()
    port = _saved_port(home)
    workers = {
        pid_file.stem.removeprefix("worker-"): Service(pid_file.stem, home).pid()
        for pid_file in sorted(home.glob("worker-*.pid"))
    }
    return StackStatus(
        home=home,
        port=port,
        server_pid=Service("server", home).pid(),
        healthy=port is not None and server_healthy(port),
        workers=workers,
    )
