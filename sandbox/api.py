"""The Python API: run one candidate's code, or a batch with bounded parallelism.

    with Sandbox(warm=2) as box:
        result = box.run(code)                       # one ExecResult
        results = box.run_many(codes, parallelism=2)  # in the order given

Construction checks that the engine answers and the image exists (ServiceUnavailable if not)
and removes leftovers of crashed processes. After that, an engine failure during a run is a
``sandbox_error`` result, never an exception; Ctrl-C removes every container still running.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

import docker

from sandbox import cleanup, engine
from sandbox.container import (
    ENGINE_ERRORS,
    Delivery,
    Slot,
    delivery_for,
    discard,
    run_in,
    start_container,
)
from sandbox.image import require_image
from sandbox.limits import DEFAULT_LIMITS, PARALLELISM, Limits
from sandbox.pool import WarmPool
from sandbox.result import ExecResult

STOP_SWEEP_S = 30.0  # at most this long removing containers workers still start after Ctrl-C


def _same_container_limits(a: Limits, b: Limits) -> bool:
    # Only these are fixed when a container starts; timeout and output caps come per job.
    keys = ("memory_mb", "cpus", "pids", "work_tmpfs_mb", "tmp_tmpfs_mb")
    return all(getattr(a, key) == getattr(b, key) for key in keys)


class Sandbox:
    def __init__(
        self,
        *,
        limits: Limits = DEFAULT_LIMITS,
        warm: int = 0,
        image: str | None = None,
        client: docker.DockerClient | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        self.client = client or engine.client()
        self.image = require_image(self.client, image)
        self.limits = limits
        # How code reaches containers: bind mount (local engine) or copy-in (any engine).
        self.delivery = delivery or delivery_for(self.client)
        cleanup.remove_leftovers(self.client)
        self.pool = (
            WarmPool(self.client, self.image, limits, warm, self.delivery) if warm > 0 else None
        )

    def _slot(self, limits: Limits) -> Slot:
        if self.pool is not None and _same_container_limits(limits, self.pool.limits):
            slot = self.pool.acquire()
            # A warm container may have gone meanwhile (idle exit, removed on Ctrl-C).
            with contextlib.suppress(*ENGINE_ERRORS):
                slot.container.reload()
                if slot.container.status == "running":
                    return slot
            discard(slot.container)
        return start_container(self.client, self.image, limits, self.delivery)

    def run(self, code: str, limits: Limits | None = None) -> ExecResult:
        """Run one candidate in a fresh container; always returns a result."""
        limits = limits or self.limits
        try:
            slot = self._slot(limits)
        except ENGINE_ERRORS as error:
            return ExecResult.sandbox_error(
                f"could not start a sandbox container: {type(error).__name__}: {error}",
                self.image,
            )
        return run_in(slot, code, limits)

    def run_many(
        self,
        codes: Sequence[str],
        limits: Limits | None = None,
        parallelism: int = PARALLELISM,
    ) -> list[ExecResult]:
        """Run each code in its own container, at most ``parallelism`` at once; results in order."""
        executor = ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="sandbox-run")
        futures: list[Future[ExecResult]] = []
        try:
            futures += [executor.submit(self.run, code, limits) for code in codes]
            results = [future.result() for future in futures]
        except BaseException:
            # Ctrl-C (or anything else): stop queued runs, kill the running containers,
            # which makes their waits return at once. Again until every worker is done: one
            # may be between creating its container and tracking it (that container would run
            # its job to the end and the exit wait for it), so the engine is asked for this
            # process's containers too, not only the tracker.
            executor.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + STOP_SWEEP_S
            while True:
                cleanup.TRACKER.remove_all()
                with contextlib.suppress(*ENGINE_ERRORS):
                    cleanup.remove_own(self.client)
                if not futures_wait(futures, timeout=0.1).not_done:
                    break
                if time.monotonic() > deadline:
                    break
            raise
        executor.shutdown(wait=True)
        return results

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        with contextlib.suppress(*ENGINE_ERRORS):
            self.client.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
