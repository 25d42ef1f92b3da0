"""Process-wide defaults that must be in place before Prefect is imported.

Prefect reads its settings from the environment at import time, so callers (``tasks``,
``flows``, the CLI) call :func:`apply_prefect_defaults` first. Users can still override every
value by exporting it themselves: we only ``setdefault``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = REPO_ROOT / "sql"

# Offline machines: telemetry sends fail and fill the logs (and lock SQLite in tests).
PREFECT_OFFLINE_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    # The embedded server needs ~20 s to start on a loaded 2-core machine: the default
    # limit is that close, and a run that cannot start its server fails before any work.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def apply_prefect_defaults() -> None:
    """Turn Prefect telemetry off unless the user configured it explicitly."""
    for name, value in PREFECT_OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)


def default_store_root() -> Path:
    """Where runs are stored when no ``--store`` is given: ``$OPTFOLIO_STORE`` or ``./store``."""
    return Path(os.environ.get("OPTFOLIO_STORE", "store")).resolve()
