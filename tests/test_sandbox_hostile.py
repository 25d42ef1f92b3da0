"""Hostile candidates against the real engine: each is contained and reported correctly.

All programs run once, two at a time, in a module fixture (short limits keep it quick on a
2-core machine); each test then checks one program's result.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandbox import DEFAULT_LIMITS, ExecResult, Limits

pytestmark = pytest.mark.docker

CANARY = "optfolio-canary-7f3a9c1e"
SHORT = DEFAULT_LIMITS.with_(timeout_s=3.0)
SMALL = DEFAULT_LIMITS.with_(timeout_s=20.0, stdout_cap=4096, stderr_cap=4096)

LOOPBACK = """
import socket
outcomes = []
for host in ("127.0.0.1", "localhost", "host.docker.internal", "172.17.0.1", "10.0.0.1"):
    try:
        socket.create_connection((host, {port}), timeout=2).close()
        outcomes.append(host + " connected")
    except OSError as e:
        outcomes.append(host + " " + type(e).__name__)
print("\\n".join(outcomes))
"""

DNS = """
import socket
for name in ("pypi.org", "deb.debian.org", "localhost"):
    try:
        print(name, socket.getaddrinfo(name, 443)[0][4])
    except OSError as e:
        print(name, "blocked", type(e).__name__)
"""

HOST_SECRETS = """
import os
print("ENV", dict(os.environ))
for path in ("{canary_file}", "/proc/1/environ", "/etc/shadow", "/root/.bashrc",
             "/var/run/docker.sock", "/proc/self/environ"):
    try:
        with open(path, "rb") as handle:
            print(path, handle.read()[:2000])
    except OSError as e:
        print(path, "unreadable", type(e).__name__)
"""

WRITE_OUTSIDE = """
import os
results = {}
for path in ("/etc/evil", "/opt/venv/evil.py", "/code/main.py", "/code/evil", "/usr/bin/evil",
             "/evil", "/proc/sys/kernel/hostname", "/sys/fs/cgroup/evil"):
    try:
        with open(path, "w") as handle:
            handle.write("x")
        results[path] = "written"
    except OSError as e:
        results[path] = type(e).__name__
with open("/work/ok.txt", "w") as handle:
    handle.write("fine")
print(results)
print("WORK", open("/work/ok.txt").read())
"""

FILL_TMPFS = """
chunk = b"x" * (1 << 20)
written = 0
with open("/work/big", "wb") as handle:
    while True:
        handle.write(chunk)
        handle.flush()
        written += 1
"""

FORK_BOMB = """
import os
print("forking", flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

MEMORY_BOMB = """
hog = []
while True:
    hog.append(bytearray(32 * 2**20))
"""

BUSY_LOOP = """
print("spinning", flush=True)
while True:
    pass
"""

SLEEP_PAST = """
import time
print("before sleep", flush=True)
time.sleep(600)
print("after sleep")
"""

STDOUT_FLOOD = """
import sys
while True:
    sys.stdout.write("flood " * 10000)
"""

STDERR_FLOOD = """
import sys
while True:
    sys.stderr.write("err " * 10000)
"""

BINARY_OUTPUT = """
import sys, os
sys.stdout.buffer.write(bytes(range(256)) + b"\\n\\xff\\xfe\\xc3\\x28 not utf-8\\n")
sys.stdout.buffer.write(b"STATUS: Optimal\\nOBJECTIVE: 7\\n")
sys.stderr.buffer.write(b"\\x00\\x01\\x80 binary stderr\\n")
"""

KILL_PID_1 = """
import os, signal
for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGSTOP):
    try:
        os.kill(1, sig)
        print("sent", sig.name)
    except OSError as e:
        print("refused", sig.name, type(e).__name__)
try:
    os.kill(-1, signal.SIGKILL)  # everything this user may signal, ourselves included
except OSError as e:
    print("kill -1 refused", type(e).__name__)
print("still alive")
"""

BACKGROUND = """
import os, subprocess, sys
subprocess.Popen(["sleep", "600"])  # keeps running after we exit
chatty = "import time\\nwhile True: print('bg', flush=True); time.sleep(0.1)"
subprocess.Popen([sys.executable, "-c", chatty])
if os.fork() == 0:
    os.setsid()  # a daemon in its own session, holding our stdout pipe open
    import time
    time.sleep(600)
    os._exit(0)
print("STATUS: Optimal")
print("OBJECTIVE: 3")
"""

FORGED_FRAME = """
import json
print("@@optfolio-sandbox-result@@ " + json.dumps({"reason": "exit", "exit_code": 0,
      "runtime_s": 0, "stdout_b64": "", "stderr_b64": "", "stdout_bytes": 0, "stderr_bytes": 0}))
raise SystemExit(5)
"""

BIG_SOURCE = "# " + "x" * 100 + "\n"
BIG_SOURCE = (
    BIG_SOURCE * (1_050_000 // len(BIG_SOURCE))
    + 'print("STATUS: Optimal")\nprint("OBJECTIVE: 12.5")\n'
)


@pytest.fixture(scope="module")
def listener() -> Iterator[tuple[int, list[object]]]:
    """A real TCP listener on the host's loopback; records any connection it accepts."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))  # every host address, loopback included
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[1])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def results(
    sandbox_box: object,
    listener: tuple[int, list[object]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, ExecResult]]:
    port, _ = listener
    canary_file = Path(tmp_path_factory.mktemp("canary")) / "secret.txt"
    canary_file.write_text(CANARY)
    os.environ["OPTFOLIO_TEST_CANARY"] = CANARY  # a secret in the host's environment
    cases: dict[str, tuple[str, Limits]] = {
        "loopback": (LOOPBACK.replace("{port}", str(port)), SMALL),
        "dns": (DNS, SMALL),
        "host_secrets": (HOST_SECRETS.replace("{canary_file}", str(canary_file)), SMALL),
        "write_outside": (WRITE_OUTSIDE, SMALL),
        "fill_tmpfs": (FILL_TMPFS, SMALL),
        "fork_bomb": (FORK_BOMB, SHORT),
        "memory_bomb": (MEMORY_BOMB, SMALL.with_(memory_mb=128)),
        "busy_loop": (BUSY_LOOP, SHORT),
        "sleep_past": (SLEEP_PAST, SHORT),
        "stdout_flood": (STDOUT_FLOOD, SMALL),
        "stderr_flood": (STDERR_FLOOD, SMALL),
        "binary_output": (BINARY_OUTPUT, SMALL),
        "kill_pid_1": (KILL_PID_1, SMALL),
        "background": (BACKGROUND, SMALL),
        "forged_frame": (FORGED_FRAME, SMALL),
        "big_source": (BIG_SOURCE, SMALL),
    }
    try:
        with ThreadPoolExecutor(2) as executor:
            futures = {
                name: executor.submit(sandbox_box.run, code, limits)  # type: ignore[attr-defined]
                for name, (code, limits) in cases.items()
            }
            yield {name: future.result() for name, future in futures.items()}
    finally:
        del os.environ["OPTFOLIO_TEST_CANARY"]


def test_host_loopback_listener_unreachable(
    results: dict[str, ExecResult], listener: tuple[int, list[object]]
) -> None:
    result = results["loopback"]
    assert result.status == "ok", result.stderr
    assert "connected" not in result.stdout
    assert listener[1] == [], "the host listener accepted a connection from the sandbox"


def test_dns_fails(results: dict[str, ExecResult]) -> None:
    result = results["dns"]
    assert result.status == "ok", result.stderr
    assert "pypi.org blocked" in result.stdout and "deb.debian.org blocked" in result.stdout


def test_host_files_and_environment_invisible(results: dict[str, ExecResult]) -> None:
    result = results["host_secrets"]
    assert result.status == "ok", result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert "OPTFOLIO_TEST_CANARY" not in result.stdout
    assert "secret.txt unreadable FileNotFoundError" in result.stdout
    assert "/var/run/docker.sock unreadable" in result.stdout
    assert "/etc/shadow unreadable" in result.stdout


def test_writes_outside_work_dir_fail(results: dict[str, ExecResult]) -> None:
    result = results["write_outside"]
    assert result.status == "ok", result.stderr
    assert "'written'" not in result.stdout
    assert "WORK fine" in result.stdout


def test_filling_tmpfs_stops_at_its_cap(results: dict[str, ExecResult]) -> None:
    result = results["fill_tmpfs"]
    assert result.status == "error"
    assert "No space left on device" in result.stderr


def test_fork_bomb_is_stopped(results: dict[str, ExecResult]) -> None:
    result = results["fork_bomb"]
    assert result.status == "timeout"
    assert "forking" in result.stdout


def test_memory_bomb_is_oom(results: dict[str, ExecResult]) -> None:
    result = results["memory_bomb"]
    assert result.status == "oom"
    assert result.exit_code == 137


def test_busy_loop_times_out(results: dict[str, ExecResult]) -> None:
    result = results["busy_loop"]
    assert result.status == "timeout"
    assert result.stdout == "spinning\n"


def test_sleep_past_timeout_keeps_earlier_output(results: dict[str, ExecResult]) -> None:
    result = results["sleep_past"]
    assert result.status == "timeout"
    assert result.stdout == "before sleep\n"
    assert result.runtime_s is not None and result.runtime_s < 60


@pytest.mark.parametrize(
    ("case", "stream"), [("stdout_flood", "stdout"), ("stderr_flood", "stderr")]
)
def test_output_flood_is_capped(results: dict[str, ExecResult], case: str, stream: str) -> None:
    result = results[case]
    assert result.status == "output_limit"
    assert getattr(result, f"{stream}_truncated") is True
    assert len(getattr(result, stream).encode()) <= SMALL.stdout_cap


def test_binary_and_non_utf8_output(results: dict[str, ExecResult]) -> None:
    result = results["binary_output"]
    assert result.status == "ok", result.stderr
    assert "\ufffd" in result.stdout and "\x00" not in result.stdout
    assert "not utf-8" in result.stdout
    assert (result.solver_status, result.objective) == ("Optimal", 7.0)
    assert "binary stderr" in result.stderr


def test_one_megabyte_source(results: dict[str, ExecResult]) -> None:
    result = results["big_source"]
    assert len(BIG_SOURCE) > 1_000_000
    assert result.status == "ok", result.stderr
    assert result.objective == 12.5


def test_killing_pid_1_does_nothing(results: dict[str, ExecResult]) -> None:
    result = results["kill_pid_1"]
    # PID 1 (the runner) drops every signal from inside; kill(-1) spares PID 1 and the caller.
    assert result.status == "ok", result.stderr
    assert "sent SIGKILL" in result.stdout and "still alive" in result.stdout


def test_background_processes_do_not_outlive_the_run(results: dict[str, ExecResult]) -> None:
    result = results["background"]
    assert result.status == "ok", result.stderr
    assert result.objective == 3.0
    assert result.runtime_s is not None and result.runtime_s < SMALL.timeout_s


def test_forged_result_frame_is_ignored(results: dict[str, ExecResult]) -> None:
    result = results["forged_frame"]
    assert result.status == "error"
    assert result.exit_code == 5
