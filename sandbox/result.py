"""The typed result of one sandboxed run, and its row in the ``executions`` table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from sandbox.limits import LIMIT_ERRORS
from sandbox.protocol import parse_output

Status = Literal["ok", "error", "timeout", "oom", "output_limit", "sandbox_error"]
STATUSES: tuple[str, ...] = get_args(Status)


@dataclass(frozen=True)
class ExecResult:
    """What one candidate did in the sandbox.

    ``status``: ``ok`` (exit 0), ``error`` (non-zero exit), ``timeout``, ``oom``,
    ``output_limit`` (the candidate ran over a limit), or ``sandbox_error`` (the sandbox itself
    failed; ``stderr`` says how). ``exit_code`` follows the shell: 128 + N when killed by
    signal N; None when the candidate never ran. ``runtime_s`` is the candidate's wall time.
    """

    status: Status
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    runtime_s: float | None
    solver_status: str | None
    objective: float | None
    image: str | None

    @classmethod
    def from_output(
        cls,
        *,
        status: Status,
        exit_code: int | None,
        stdout: bytes,
        stderr: bytes,
        stdout_truncated: bool,
        stderr_truncated: bool,
        runtime_s: float | None,
        image: str | None,
    ) -> ExecResult:
        # Candidates may print anything: undecodable bytes become U+FFFD, never an exception.
        text = stdout.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        solver_status, objective = parse_output(text)
        return cls(
            status=status,
            exit_code=exit_code,
            stdout=text,
            stderr=stderr.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
            stdout_truncated=stdout_truncated,
            stderr_truncated=stderr_truncated,
            runtime_s=runtime_s,
            solver_status=solver_status,
            objective=objective,
            image=image,
        )

    @classmethod
    def sandbox_error(cls, message: str, image: str | None = None) -> ExecResult:
        return cls("sandbox_error", None, "", message, False, False, None, None, None, image)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def raise_for_status(self) -> ExecResult:
        """Raise the limit error for timeout/oom/output_limit; return self otherwise."""
        error = LIMIT_ERRORS.get(self.status)
        if error is not None:
            raise error(f"candidate stopped: {self.status} (exit code {self.exit_code})")
        return self

    def to_row(self) -> dict[str, Any]:
        """The ``executions`` row (optfolio.schemas.EXECUTIONS) minus problem_id/candidate_id."""
        return asdict(self)

    def to_json(self) -> str:
        """One strict-JSON object; an infinite objective (strict JSON has none) becomes null."""
        row = self.to_row()
        if row["objective"] is not None and not math.isfinite(row["objective"]):
            row["objective"] = None
        return json.dumps(row, allow_nan=False)
