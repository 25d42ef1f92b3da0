"""The Docker sandbox for untrusted candidate code (see README, "Sandbox").

Modules: ``limits`` (what a run may use), ``protocol`` (how candidates report status and
objective), ``result`` (the typed ``ExecResult``), ``engine`` (find or start dockerd),
``image`` (build the image), ``container``/``pool``/``api`` (run code), ``cleanup``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.api import Sandbox
    from sandbox.limits import DEFAULT_LIMITS, Limits
    from sandbox.protocol import parse_output
    from sandbox.result import ExecResult

# Imported when first used: reading ``sandbox.limits`` (the run parameters' defaults) must not
# import the Docker client.
_EXPORTS = {
    "DEFAULT_LIMITS": "sandbox.limits",
    "ExecResult": "sandbox.result",
    "Limits": "sandbox.limits",
    "Sandbox": "sandbox.api",
    "parse_output": "sandbox.protocol",
}
__all__ = ["DEFAULT_LIMITS", "ExecResult", "Limits", "Sandbox", "parse_output"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
