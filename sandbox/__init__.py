"""The Docker sandbox for untrusted candidate code (see README, "Sandbox").

Modules: ``limits`` (what a run may use), ``protocol`` (how candidates report status and
objective), ``result`` (the typed ``ExecResult``), ``engine`` (find or start dockerd),
``image`` (build the image), ``container``/``pool``/``api`` (run code), ``cleanup``.
"""

from sandbox.api import Sandbox, run_code
from sandbox.limits import DEFAULT_LIMITS, Limits
from sandbox.protocol import parse_output
from sandbox.result import ExecResult

__all__ = ["DEFAULT_LIMITS", "ExecResult", "Limits", "Sandbox", "parse_output", "run_code"]
