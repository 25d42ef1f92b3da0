"""Fixtures for the Docker sandbox tests: the real engine and image, never a mock.

The session starts the engine itself if none answers (root only; stopped again at the end if
it started it) and builds the image if its recipe's tag is missing. When that is impossible,
tests skip with the reason, except in CI, where a missing engine or image is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

import docker
import pytest

from optfolio.errors import ServiceUnavailable
from tests.plugins.ci import prerequisite_missing


def _unavailable(reason: str) -> NoReturn:
    prerequisite_missing(f"sandbox unavailable: {reason}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    from sandbox import cleanup, engine

    try:
        session = engine.session()
        client = session.__enter__()
    except ServiceUnavailable as error:
        _unavailable(str(error))
    try:
        yield client
        # Every container this test process created must be gone by now.
        leftovers = cleanup.list_sandbox_containers(client, owner=cleanup.owner_id())
        assert leftovers == [], f"sandbox containers left behind: {leftovers}"
    finally:
        session.__exit__(None, None, None)


@pytest.fixture(scope="session")
def sandbox_image(docker_client: docker.DockerClient) -> str:
    from sandbox import engine, image

    try:
        # Quick when the recipe's tag exists; a first build takes minutes, hence the timeout.
        return image.build(engine.client(timeout=900), log=lambda line: None)
    except ServiceUnavailable as error:
        _unavailable(str(error))
        raise


@pytest.fixture(scope="session")
def sandbox_box(docker_client: docker.DockerClient, sandbox_image: str) -> Iterator[object]:
    """One Sandbox with a small warm pool, shared by the session's tests."""
    from sandbox import Sandbox

    with Sandbox(client=docker_client, image=sandbox_image, warm=2) as box:
        yield box
