"""One Prefect test harness (a real, temporary API server and database) per test session."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

T = TypeVar("T")


def off_event_loop(call: Callable[[], T]) -> T:
    """CALL run from a thread without an event loop, in this thread's context (the Prefect
    settings). Once Playwright's sync API has run in a session, the main thread holds a running
    loop, and Prefect's dual functions (``Variable.set``, ``Block.save``) then return coroutines
    instead of doing anything."""
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, call).result()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    # A private PREFECT_HOME keeps results and caches of other runs out of the tests; no
    # heartbeat means no 1 s wait at the end of every flow.
    with (
        temporary_settings({PREFECT_HOME: str(home), PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield
