"""Whether the tests run in CI, and what a missing prerequisite means there."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def prerequisite_missing(reason: str) -> NoReturn:
    """A skip on a developer's machine; a failure in CI, where .ci/run installs and starts
    everything the tests need, so a missing engine, image, model or tool is a bug there."""
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)
