"""Where the LLM calls go and how patiently: one immutable settings object per role.

Values come from explicit arguments first (an API key read from a Prefect Secret block by the
tasks arrives this way), then the environment (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``OPTFOLIO_LLM_MODEL``), then defaults. With no base URL at all the run uses the embedded
local model (:func:`servers.local_model.endpoint.local_endpoint`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from optfolio.errors import InputError

if TYPE_CHECKING:
    from optfolio.run_config import ModelEndpoint

NMode = Literal["auto", "native", "repeat"]

DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"
# The key sent to a loopback server that checks none; the openai client insists on one.
LOCAL_API_KEY = "sk-local-no-key"


class Secret:
    """A string that never shows itself in repr, str, logs or pickled caches by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Refuse to be pickled so a key cannot reach a Prefect result or a cache file.
        raise TypeError("a Secret is not picklable; pass settings without the key")


@dataclass(frozen=True)
class LLMSettings:
    """Endpoint, model and request policy. ``api_key`` is hidden from repr."""

    model: str = DEFAULT_LOCAL_MODEL
    base_url: str | None = None
    api_key: Secret | None = field(default=None, repr=False, compare=False)
    # The longest the server may stay silent (httpx read timeout): serve-local sends a progress
    # byte whenever it has decoded more, so there it bounds a stall, not a busy queue.
    timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    concurrency: int = 4  # requests in flight at once per client
    max_retries: int = 6
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    # How to get n samples: one request with ``n`` (native), one request per sample (repeat),
    # or native with a fallback to repeat when the endpoint returns fewer choices (auto).
    n_mode: NMode = "auto"
    # Samples per request in native mode: keeps one request's duration (and so the timeout it
    # needs) bounded on slow endpoints; a server that caches the prompt loses nothing by it.
    max_n_per_request: int = 16
    logprobs: bool = True  # ask for token log-probs; endpoints that refuse give nulls

    @classmethod
    def from_env(
        cls,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        **overrides: object,
    ) -> LLMSettings:
        """Explicit arguments win over ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / defaults."""
        url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        chosen = model or os.environ.get("OPTFOLIO_LLM_MODEL") or DEFAULT_LOCAL_MODEL
        settings = cls(model=chosen, base_url=url, api_key=Secret(key) if key else None)
        return replace(settings, **overrides) if overrides else settings  # type: ignore[arg-type]

    @property
    def is_local(self) -> bool:
        """No endpoint configured: the embedded local server will be started for the run."""
        return self.base_url is None

    def with_endpoint(self, base_url: str, api_key: str | None = None) -> LLMSettings:
        return replace(self, base_url=base_url, api_key=Secret(api_key) if api_key else None)


def llm_settings(endpoint: ModelEndpoint, api_key: Secret | None = None) -> LLMSettings:
    """Client settings for a resolved endpoint. The API key: ``api_key`` (read by the caller,
    e.g. from the Prefect Secret block the endpoint names), else ``$OPENAI_API_KEY``."""
    if endpoint.base_url is None:
        raise InputError(f"model {endpoint.model!r} has no endpoint: resolve it first")
    overrides = {"timeout_s": endpoint.timeout_s} if endpoint.timeout_s else {}
    settings = LLMSettings.from_env(model=endpoint.model, base_url=endpoint.base_url, **overrides)
    return settings if api_key is None else replace(settings, api_key=api_key)
