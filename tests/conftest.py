"""Shared test set-up. Fixture modules per subsystem live in tests/plugins/."""

from __future__ import annotations

import os

# Before anything imports Prefect: no telemetry from tests.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# One line per fixture module; each subsystem adds its own.
pytest_plugins: list[str] = [
    "tests.plugins.prefect_fixtures",
    "tests.plugins.llm_fixtures",
    "tests.plugins.sandbox_fixtures",
    "tests.plugins.server_fixtures",
    "tests.plugins.second_engine",
    "tests.plugins.run_fixtures",
]
