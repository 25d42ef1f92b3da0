"""A real local Prefect stack (server, work pool, deployments, worker) and headless Chromium.

The stack is started by the same code as `optfolio server up`, once per session, on a free
loopback port with its own home (PREFECT_HOME, SQLite, logs) under pytest's tmp dir.
Chromium is Debian's (/usr/bin/chromium) driven by Playwright; Playwright's own browser
download never runs. Outside CI a missing browser skips the UI test; in CI it fails.
`portfolio_run_ready` stands for what the worker's portfolio_run needs (Docker, the sandbox
image, the local models); the stack's worker never inherits `$OPENAI_BASE_URL`.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from servers import prefect_services
from tests.plugins.ci import prerequisite_missing
from tests.plugins.llm_fixtures import _require_local_models as require_local_models

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
# The flags measured in ENVIRONMENT.md: no sandbox as root, no GPU, no network chatter.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((prefect_services.HOST, 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def prefect_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[prefect_services.StackStatus]:
    home = tmp_path_factory.mktemp("prefect-stack")
    try:
        with pytest.MonkeyPatch.context() as env:
            # The worker inherits this environment: an endpoint from the developer's shell
            # would take the runs' LLM calls away from the embedded local model server.
            env.delenv("OPENAI_BASE_URL", raising=False)
            state = prefect_services.up(port=_free_port(), home=home, log=lambda _line: None)
    except BaseException:
        prefect_services.down(home, log=lambda _line: None)  # whatever did start
        raise
    try:
        yield state
    finally:
        prefect_services.down(home, log=lambda _line: None)


@pytest.fixture(scope="session")
def portfolio_run_ready(sandbox_image: str) -> None:
    """What the worker's portfolio_run needs here: the Docker engine and sandbox image (built
    now, outside any test's time limit) and the pulled local models (CI: missing fails)."""
    require_local_models()


def _unavailable(reason: str) -> NoReturn:
    prerequisite_missing(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        _unavailable("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    executable = str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            # Playwright gives each launch a fresh temporary profile (it refuses
            # --user-data-dir here), so no state leaks between runs.
            args=CHROMIUM_ARGS,
            timeout=120_000,
        )
        try:
            yield browser
        finally:
            browser.close()
