"""The in-container runner: PID 1 of every sandbox container (standard library only).

It waits for a job (so a container can be started before its candidate is known: the warm
pool), from one of two sources the host chooses with ``OPTFOLIO_JOB_SOURCE``: ``dir``, a
read-only bind-mounted ``/code`` directory holding ``main.py`` and then ``job.json``; or
``stdin``, one JSON line (the job, with ``code_bytes``) followed by the code, then end of
file (copy-in: works with an engine on another machine, where no host path can be mounted;
the code is written to ``/tmp/optfolio-job/``, a tmpfs). It runs the candidate's ``main.py`` as a
child process with a clean environment, enforces the wall timeout and the output caps itself
(so a flood is stopped at once and a timed-out candidate still reports what it printed), and
finally prints one result frame: a marker and a JSON object with the captured bytes in base64,
so binary or non-UTF-8 output survives Docker's JSON log driver intact.

The container's own limits (memory, pids, CPUs, read-only root, no network) and the host's
wall-clock kill are the real boundary; this runner is a convenience inside it. When it exits,
the kernel kills every process left in the container (background children included).
"""

import base64
import contextlib
import json
import os
import selectors
import signal
import sys
import time

FRAME_MARKER = "@@optfolio-sandbox-result@@"
CODE_DIR = "/code"
STDIN_CODE_DIR = "/tmp/optfolio-job"
JOB_FILE = "job.json"
STDIN_READ_S = 120.0  # once the job started arriving: how long the rest may take
WORK_DIR = "/work"
POLL_S = 0.002
DRAIN_S = 0.2  # after the candidate exits: how long to collect what its pipes still hold
KILL_WAIT_S = 5.0

CANDIDATE_ENV = {
    "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME": WORK_DIR,
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",  # what was printed before a kill is still reported
}


def _wait_for_job(idle_exit_s: float) -> dict | None:
    path = os.path.join(CODE_DIR, JOB_FILE)
    deadline = time.monotonic() + idle_exit_s
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            time.sleep(POLL_S)
    return None


def _read_stdin_job(idle_exit_s: float) -> dict | None:
    """The job and code from stdin; None if nothing arrives in time. A short or malformed
    transfer is a job with ``error`` set, reported to the host as such."""
    fd = sys.stdin.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    if not selector.select(timeout=idle_exit_s):
        return None
    data = bytearray()
    deadline = time.monotonic() + STDIN_READ_S
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            header, newline, code = bytes(data).partition(b"\n")
            try:
                job = json.loads(header)
            except ValueError:
                return {"error": "unreadable job header"}
            if not newline or len(code) != int(job.get("code_bytes", -1)):
                return {"error": f"code cut short: {len(code)} bytes arrived"}
            os.makedirs(STDIN_CODE_DIR, mode=0o700, exist_ok=True)
            with open(os.path.join(STDIN_CODE_DIR, job["main"]), "wb") as handle:
                handle.write(code)
            job["code_dir"] = STDIN_CODE_DIR
            return job
        data += chunk
    return {"error": "the job did not finish arriving in time"}


def _raise_oom_score() -> None:
    # The candidate, not this runner, should be what the OOM killer picks.
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
    except OSError:
        pass


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run(job: dict) -> dict:
    import subprocess

    caps = {"stdout": int(job["stdout_cap"]), "stderr": int(job["stderr_cap"])}
    timeout_s = float(job["timeout_s"])
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, os.path.join(job.get("code_dir", CODE_DIR), job["main"])],
        cwd=WORK_DIR,
        env=CANDIDATE_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, killed as one
        preexec_fn=_raise_oom_score,
    )
    kept = {"stdout": bytearray(), "stderr": bytearray()}
    seen = {"stdout": 0, "stderr": 0}
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ, "stdout")
    selector.register(child.stderr, selectors.EVENT_READ, "stderr")
    reason = "exit"
    drain_until = None
    while selector.get_map():
        now = time.monotonic()
        if child.poll() is not None and drain_until is None:
            # A background child may hold the pipes open forever: drain briefly, then stop.
            drain_until = now + DRAIN_S
        if drain_until is not None and now >= drain_until:
            break
        if reason == "exit" and now - started > timeout_s:
            reason = "timeout"
            _kill_group(child.pid)
            drain_until = now + DRAIN_S
        for key, _ in selector.select(timeout=0.05):
            name = key.data
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fileobj)
                continue
            seen[name] += len(data)
            room = caps[name] - len(kept[name])
            if room > 0:
                kept[name] += data[:room]
            if seen[name] > caps[name] and reason == "exit":
                reason = "output_limit"
                _kill_group(child.pid)
                drain_until = time.monotonic() + DRAIN_S
    try:
        returncode = child.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        _kill_group(child.pid)
        returncode = child.wait(timeout=KILL_WAIT_S)
    return {
        "reason": reason,
        "exit_code": returncode,
        "runtime_s": time.monotonic() - started,
        "stdout_b64": base64.b64encode(bytes(kept["stdout"])).decode("ascii"),
        "stderr_b64": base64.b64encode(bytes(kept["stderr"])).decode("ascii"),
        "stdout_bytes": seen["stdout"],
        "stderr_bytes": seen["stderr"],
    }


def main() -> None:
    # As PID 1 we get only signals we handle; ignoring SIGINT means a candidate's
    # os.kill(1, SIGINT) is simply dropped instead of raising KeyboardInterrupt here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    idle_exit_s = float(os.environ.get("OPTFOLIO_IDLE_EXIT_S", "900"))
    if os.environ.get("OPTFOLIO_JOB_SOURCE") == "stdin":
        job = _read_stdin_job(idle_exit_s)
    else:
        job = _wait_for_job(idle_exit_s)
    if job is None:
        frame: dict = {"reason": "idle"}
    elif "error" in job:
        frame = {"reason": "bad_job", "error": job["error"]}
    else:
        frame = run(job)
    out = sys.stdout.buffer
    out.write(b"\n" + FRAME_MARKER.encode() + b" " + json.dumps(frame).encode() + b"\n")
    out.flush()


if __name__ == "__main__":
    main()
