"""Which process owns a thing, in a form another process can check later.

A temporary file that a writer will rename, a sandbox container, a job directory: each names
its owner, and a cleanup removes only what belongs to owners that are gone. A PID alone is
ambiguous (PIDs are reused, and two machines or two PID namespaces have the same PIDs), so an
owner is ``<host>.<pid>.<start ticks>``:

- ``host`` is a short digest of the host name, the kernel's boot id and the PID namespace, so
  another machine on a shared file system, the same machine after a reboot, or a container
  with the same host name never passes for this one;
- ``start ticks`` is the process's start time from ``/proc/<pid>/stat``, so a recycled PID is
  not taken for the owner.

An owner on another host cannot be checked from here: it is reported as *unknown*, and a
cleanup then relies on age alone (see :data:`STALE_AFTER_S` where it is used).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

_OWNER = re.compile(r"^(?P<host>[0-9a-f]{12})\.(?P<pid>\d+)\.(?P<ticks>\d+)$")


def start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" when it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22; the command name in field 2 may contain spaces and ')', so split after the last.
    return stat.rpartition(")")[2].split()[19]


@functools.cache
def host_token() -> str:
    """This host (machine, boot and PID namespace) as 12 hex digits."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    text = "\0".join((socket.gethostname(), boot_id, namespace))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    ticks: str

    def __str__(self) -> str:
        return f"{self.host}.{self.pid}.{self.ticks}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner written as ``str(owner)``; None for anything else (an older format)."""
        match = _OWNER.match(text)
        if match is None:
            return None
        return cls(match["host"], int(match["pid"]), match["ticks"])

    def alive(self) -> bool | None:
        """True while the owner runs, False once it is gone, None when this host cannot tell
        (the owner is on another host)."""
        if self.host != host_token():
            return None
        return start_ticks(self.pid) == self.ticks


def current(pid: int | None = None) -> Owner:
    """The owner identity of this process (or of ``pid``, a process on this host)."""
    pid = os.getpid() if pid is None else pid
    return Owner(host_token(), pid, start_ticks(pid))
