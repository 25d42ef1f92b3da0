"""What a Prefect user keeps on the server, read here so that ``optfolio/`` never imports
Prefect: the API key in a Secret block, endpoint and model defaults in Variables, and one
global concurrency limit per endpoint shared by every run, process and Dask worker.

Precedence for a role's endpoint and model: the run's parameter, then the Prefect Variable,
then ``$OPENAI_BASE_URL`` (applied later, by ``role_endpoints``), then the default.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping

from optfolio.errors import InputError
from optfolio.llm.client import RequestSlot
from optfolio.llm.settings import Secret
from optfolio.run_config import ModelEndpoint, PortfolioRunParameters

BASE_URL_VARIABLE = "optfolio_base_url"  # Prefect Variable: every role's default endpoint
MODEL_VARIABLE = "optfolio_model"  # Prefect Variable: every role's default model
ROLES = ("generator", "evaluator", "judge")


def with_prefect_variables(parameters: PortfolioRunParameters) -> PortfolioRunParameters:
    """PARAMETERS with each role's base URL and model taken from the Prefect Variables where
    the run gives none. "Given" is what was set, not what differs from the default: a model
    field left at its default ("qwen2.5-coder-1.5b") yields to the Variable, one set to it
    does not."""
    defaults = {
        "base_url": _text_variable(BASE_URL_VARIABLE),
        "model": _text_variable(MODEL_VARIABLE),
    }
    updates = {}
    for role in ROLES:
        endpoint: ModelEndpoint = getattr(parameters, role)
        given = {k for k in endpoint.model_fields_set if getattr(endpoint, k) is not None}
        missing = {k: v for k, v in defaults.items() if v is not None and k not in given}
        if missing:
            # Validated like any parameter; the Variable's values count as given from now on.
            values = endpoint.model_dump(exclude_unset=True) | missing
            updates[role] = ModelEndpoint.model_validate(values)
    return parameters.model_copy(update=updates) if updates else parameters


def _text_variable(name: str) -> str | None:
    """The Prefect Variable's text; None when it is not set."""
    from prefect.variables import Variable

    # _sync: a sync call even where an event loop runs (a notebook), which would otherwise
    # get a coroutine back.
    value = Variable.get(name, _sync=True)
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise InputError(f"Prefect Variable {name!r} must hold a non-empty text, not {value!r}")


def secret_api_key(endpoint: ModelEndpoint, role: str) -> Secret | None:
    """The API key in the Secret block the endpoint names, read now (a rotated key serves
    the next task); None when it names none (the client then reads ``$OPENAI_API_KEY``)."""
    name = endpoint.api_key_secret
    if not name:
        return None
    from prefect.blocks.system import Secret as SecretBlock

    try:
        value = SecretBlock.load(name, _sync=True).get()
    except ValueError:  # Prefect's "Unable to find block document named ..."
        raise InputError(
            f"{role}: no Prefect Secret block named {name!r} (api_key_secret); create it in the"
            " UI (Blocks → Secret) or with prefect.blocks.system.Secret(value=...).save(name)"
        ) from None
    if not isinstance(value, str) or not value:
        raise InputError(f"{role}: Prefect Secret block {name!r} holds no API key text")
    return Secret(value)


def endpoint_limit_name(base_url: str) -> str:
    """The global concurrency limit of one endpoint: the same name in every process."""
    digest = hashlib.sha1(base_url.rstrip("/").encode()).hexdigest()[:12]
    return f"optfolio-endpoint-{digest}"


def prepare_endpoints(endpoints: Mapping[str, ModelEndpoint], endpoint_limit: int) -> None:
    """Before any paid call: every Secret block the roles name loads (a missing one fails the
    run here, not after generation is paid for), and each endpoint's global concurrency
    limit exists with ``endpoint_limit`` slots (0: this run takes none)."""
    for role, endpoint in endpoints.items():
        secret_api_key(endpoint, role)  # read and dropped: the tasks read it again
    if endpoint_limit == 0:
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists

    urls = {e.base_url for e in endpoints.values() if e.base_url}
    with get_client(sync_client=True) as client:
        for url in sorted(urls):
            name = endpoint_limit_name(url)
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=endpoint_limit)
                )
            except ObjectAlreadyExists:  # an earlier run's: the latest run sets its size
                client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=endpoint_limit, active=True)
                )


def endpoint_slot(endpoint: ModelEndpoint, endpoint_limit: int) -> RequestSlot:
    """What the LLM client holds around each request: one slot of the endpoint's global
    limit (none when the limit is 0). No acquisition timeout: a slot frees when a request
    ends (each has its own timeout) or, if its process died, when its 300 s lease lapses."""
    if endpoint_limit == 0 or endpoint.base_url is None:
        return contextlib.nullcontext
    from prefect.concurrency.sync import concurrency
    from prefect.context import SettingsContext

    name = endpoint_limit_name(endpoint.base_url)
    # The LLM client's request threads start without this task's context (contextvars do not
    # cross into a thread pool): unless it is entered again there, a slot would be asked of
    # whatever server the environment names (on a Dask worker: an ephemeral one of its own).
    captured = SettingsContext.get()

    @contextlib.contextmanager
    def slot() -> Iterator[None]:
        with (
            captured.model_copy() if captured is not None else contextlib.nullcontext(),
            # strict: a limit deleted mid-run fails loudly instead of silently not throttling;
            # a lease-renewal hiccup must not abort a request already paid for.
            concurrency(name, occupy=1, strict=True, raise_on_lease_renewal_failure=False),
        ):
            yield

    return slot
