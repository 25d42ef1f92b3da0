"""A command ends soon after SIGTERM, whatever its threads are waiting on.

SIGTERM raises SystemExit in the main thread, so every ``with`` unwinds as on any error. That
is not enough on its own: a task thread blocked in a model request (up to an hour on the local
model) or a container run keeps the interpreter alive, and Prefect's exit hooks retry sending
events to a server already stopped. So a deadline thread starts with the first SIGTERM; if the
command is still alive ``GRACE_S`` later it removes this process's sandbox containers, stops the
embedded Prefect server, and exits at once. Store parts need nothing: they are written to a
temporary name and renamed, so a part is whole or absent, and the next run resumes from them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from types import FrameType

GRACE_S = 5.0  # for the orderly unwinding; the forced exit then takes about a second more
_first_signal = threading.Event()


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler: unwind now (SystemExit), and force the exit after ``GRACE_S``."""
    code = 128 + signum
    if not _first_signal.is_set():
        _first_signal.set()
        deadline = threading.Thread(
            target=_force_exit_after, args=(GRACE_S, code), name="sigterm-deadline", daemon=True
        )
        deadline.start()
    sys.exit(code)


def _force_exit_after(grace_s: float, code: int) -> None:
    time.sleep(grace_s)
    remove_own_containers()
    stop_embedded_prefect()
    sys.stderr.write(f"optfolio: stopped {grace_s:.0f} s after SIGTERM; parts are whole\n")
    sys.stderr.flush()
    os._exit(code)


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
