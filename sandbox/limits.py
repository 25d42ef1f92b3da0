"""What a candidate may use, in one place, and the errors for a limit that was exceeded.

A run reports an exceeded limit as its ``status`` (see ``ExecResult``); callers that prefer an
exception call ``ExecResult.raise_for_status()``, which raises the matching error below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from optfolio.errors import OptfolioError

TIMEOUT_S = 60.0  # wall clock for the candidate's process, from the moment it starts
MEMORY_MB = 1024  # memory = memory + swap: no swapping, an OOM kill instead
PARALLELISM = 2  # containers running at once: one per core here; the engine needs CPU too
# Bounds of the three above, wherever they are set (a run's parameters, ``sandbox exec``).
TIMEOUT_S_MAX = 3600.0
MEMORY_MB_MIN = 64
MEMORY_MB_MAX = 65536
PARALLELISM_MAX = 64
CPUS = 1.0  # CPU quota (nano_cpus); half of this 2-core machine
PIDS = 128  # processes + threads: solvers use a few threads, a fork bomb stops here
WORK_TMPFS_MB = 64  # /work, the writable working directory (counts against MEMORY_MB too)
TMP_TMPFS_MB = 64  # /tmp, where solvers write their model files
STDOUT_CAP = 256 * 1024  # bytes of stdout kept; more than this stops the run (output_limit)
STDERR_CAP = 64 * 1024  # bytes of stderr kept; more than this stops the run (output_limit)
# Docker's own cap on the container log; above the caps plus the base64 result frame, so only
# a candidate that bypasses the runner (writing to PID 1's stdout) ever reaches it.
LOG_MAX_SIZE = "2m"
# Extra seconds the host waits beyond TIMEOUT_S before it kills the container itself.
HOST_GRACE_S = 10.0
# A warm container that gets no job within this time exits by itself (host died, say).
IDLE_EXIT_S = 900.0


@dataclass(frozen=True)
class Limits:
    """Per-run limits; defaults are the constants above."""

    timeout_s: float = TIMEOUT_S
    memory_mb: int = MEMORY_MB
    cpus: float = CPUS
    pids: int = PIDS
    work_tmpfs_mb: int = WORK_TMPFS_MB
    tmp_tmpfs_mb: int = TMP_TMPFS_MB
    stdout_cap: int = STDOUT_CAP
    stderr_cap: int = STDERR_CAP

    def __post_init__(self) -> None:
        usable = (
            0 < self.timeout_s <= TIMEOUT_S_MAX
            and MEMORY_MB_MIN <= self.memory_mb <= MEMORY_MB_MAX
            and self.cpus > 0
            and self.pids >= 8
        )
        if not usable:
            raise ValueError(f"unusable sandbox limits: {self}")

    def with_(self, **changes: float | int) -> Limits:
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_LIMITS = Limits()


class LimitExceeded(OptfolioError):
    """A candidate went over one of its limits; ``status`` is the ExecResult status."""

    status = ""


class TimeoutExceeded(LimitExceeded):
    """The candidate ran longer than ``timeout_s`` (status ``timeout``)."""

    status = "timeout"


class MemoryExceeded(LimitExceeded):
    """The candidate was OOM-killed at ``memory_mb`` (status ``oom``)."""

    status = "oom"


class OutputExceeded(LimitExceeded):
    """The candidate printed more than ``stdout_cap``/``stderr_cap`` bytes (``output_limit``)."""

    status = "output_limit"


LIMIT_ERRORS: dict[str, type[LimitExceeded]] = {
    error.status: error for error in (TimeoutExceeded, MemoryExceeded, OutputExceeded)
}
