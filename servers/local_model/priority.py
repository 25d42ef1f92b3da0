"""The local model's claim on the CPU: ahead of the run's other work while it decodes.

llama.cpp's threads meet at a barrier after every step, one thread per core. Anything else
that gets a core (a sandbox container running a candidate, Prefect, the run's own Python)
holds up one thread and so all of them: measured here (Qwen 1.5B, n = 4, 2 cores), one busy
sandbox container beside the server cut decoding from 13.8 to 1.2 tok/s
(``bench/model_priority.py``). So the server raises its scheduling priority when it starts,
before it makes any thread (threads inherit it).

Linux groups CPU time by session first when autogroup is on (most distributions), and a
nice value only counts inside its group: the server changes its session's group too, but only
when it leads that session (as when a run starts it), never a user's shell session.

Raising priority needs CAP_SYS_NICE (root has it). Without it the server says so once and
runs at normal priority: everything still works, decoding is just slower beside other work.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("optfolio.serve_local")

# How far ahead of normal (0) the server runs. Measured here (bench/model_priority.py),
# decoding kept beside one busy container, and the container's share of its core: 0: 0.08,
# 0.90; -5: 0.49, 0.68; -10: 0.84, 0.23; -20: 1.01, 0.03. At -10 a candidate still runs, ~4x
# slower while the model decodes: it needs ~15 s of CPU before the 60 s wall timeout bites.
SERVER_NICE = -10
NICE_HELP = (
    "CPU priority of the model server as a nice value (-20..0; 0 leaves it normal). "
    "Below 0 needs CAP_SYS_NICE (root has it); without it the server warns and runs at 0."
)
_AUTOGROUP = Path("/proc/self/autogroup")
_AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")


@dataclass(frozen=True)
class Priority:
    """The nice value asked for, this process's and its session group's as read back
    (``session_nice`` None: no session grouping here), and how it went."""

    requested: int
    nice: int | None
    session_nice: int | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def claim_cpu(nice: int = SERVER_NICE) -> Priority:
    """Raise this process's (and, when it leads its session, that session's) priority; what
    is returned is read back from the kernel, not assumed."""
    if not -20 <= nice <= 0:
        raise ValueError(f"nice must be between -20 and 0, got {nice}")
    if nice == 0:
        return Priority(nice, os.getpriority(os.PRIO_PROCESS, 0), session_nice(), "as asked")
    try:
        # Linux applies this to the calling thread; called before any other thread exists.
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        note = (
            f"could not raise CPU priority to nice {nice} (needs CAP_SYS_NICE): decoding "
            "slows while containers or other work use the cores"
        )
        log.warning("serve-local: %s", note)
        return Priority(nice, None, None, note)
    leads_session = os.getsid(0) == os.getpid()
    grouped = session_nice() is not None
    if leads_session and grouped:
        try:
            _AUTOGROUP.write_text(str(nice))
        except OSError as error:
            log.warning("serve-local: session CPU group left at normal priority: %s", error)
    note = "within its session's CPU group only" if grouped and not leads_session else "applied"
    return Priority(nice, os.getpriority(os.PRIO_PROCESS, 0), session_nice(), note)


def session_nice() -> int | None:
    """The nice value of this session's CPU group; None where Linux does not group by session."""
    try:
        if _AUTOGROUP_ENABLED.read_text().strip() != "1":
            return None
        # "/autogroup-42 nice -10"
        return int(_AUTOGROUP.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None
