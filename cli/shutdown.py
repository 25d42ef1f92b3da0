"""A command ends soon after SIGTERM, whatever its threads are waiting on.

SIGTERM raises SystemExit in the main thread, so every ``with`` unwinds as on any error. That
is not enough on its own: a task thread blocked in a model request (up to an hour on the local
model) or a container run keeps the interpreter alive, and Prefect's exit hooks retry sending
events to a server already stopped. So a deadline starts with the first SIGTERM; if the command
is still alive ``GRACE_S`` later it removes this process's sandbox containers and stops the
embedded Prefect server (for at most ``CLEANUP_S``), and exits at once.

The deadline cannot rely on our handler running: while a flow runs, Prefect's own SIGTERM
handler stands in for ours and hands the signal back only after its crash handling, which can
itself wait on the threads. So the deadline is armed from the signal wake-up fd, which the
interpreter writes at C level the moment any handled signal arrives, read by a thread.

Store parts need nothing: they are written to a temporary name and renamed, so a part is whole
or absent, and the next run resumes from them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from types import FrameType

GRACE_S = 4.0  # for the orderly unwinding
CLEANUP_S = 3.0  # then containers and the embedded server; the exit follows whatever happens
_armed = threading.Event()
_arm_lock = threading.Lock()


def install() -> None:
    """Handle SIGTERM in this process (call once, from the main thread, before any flow)."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(
        target=_watch_signals, args=(read_fd,), name="sigterm-watch", daemon=True
    )
    watcher.start()


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler: unwind now (SystemExit), with the deadline armed."""
    arm_deadline(128 + signum)
    sys.exit(128 + signum)


def arm_deadline(code: int) -> None:
    """Start the forced exit ``GRACE_S`` from now, once however often it is asked."""
    with _arm_lock:
        if _armed.is_set():
            return
        _armed.set()
    deadline = threading.Thread(
        target=_force_exit_after, args=(GRACE_S, code), name="sigterm-deadline", daemon=True
    )
    deadline.start()


def _watch_signals(read_fd: int) -> None:
    while data := os.read(read_fd, 512):  # one byte per signal: its number
        if signal.SIGTERM in data:
            arm_deadline(128 + signal.SIGTERM)


def _force_exit_after(grace_s: float, code: int) -> None:
    time.sleep(grace_s)
    sys.stderr.write(f"optfolio: stopping {grace_s:.0f} s after SIGTERM; parts are whole\n")
    sys.stderr.flush()
    cleanup = threading.Thread(target=_clean_up, name="sigterm-cleanup", daemon=True)
    cleanup.start()
    cleanup.join(CLEANUP_S)  # an engine too busy to answer: the next run removes the leftovers
    os._exit(code)


def _clean_up() -> None:
    with contextlib.suppress(Exception):
        remove_own_containers()
    stop_embedded_prefect()


def remove_own_containers() -> None:
    """This process's sandbox containers and job directory, if it ever used the sandbox."""
    if "sandbox.cleanup" not in sys.modules:
        return
    from sandbox import cleanup, engine

    cleanup.TRACKER.remove_all()
    with contextlib.suppress(Exception):  # an engine that is gone has no containers to remove
        client = engine.client(timeout=5)
        for container_id in cleanup.list_sandbox_containers(client, owner=cleanup.owner_id()):
            with contextlib.suppress(Exception):
                client.api.remove_container(container_id, force=True)
    shutil.rmtree(cleanup.JOBS_ROOT / cleanup.owner_id(), ignore_errors=True)


def stop_embedded_prefect() -> None:
    """Kill the temporary Prefect server this process started, if any (its own exit hook
    would wait for it politely; the local model server leaves by itself with its parent)."""
    module = sys.modules.get("prefect.server.api.server")
    if module is None:
        return
    for server in list(module.SubprocessASGIServer._instances.values()):
        process = getattr(server, "server_process", None)
        if process is not None:
            with contextlib.suppress(Exception):
                process.kill()
