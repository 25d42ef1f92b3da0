"""A warm pool: containers started ahead of time so start-up overlaps with other work.

Every container is still single-use: a candidate gets a fresh container from the pool, and
the container is destroyed after that one run; taking one from the pool starts its
replacement in the background, so the pool keeps ``size`` containers ready or starting.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import docker

from sandbox.container import (
    ENGINE_ERRORS,
    Delivery,
    Slot,
    discard,
    remove_job_dir,
    start_container,
)
from sandbox.limits import Limits

ACQUIRE_TIMEOUT_S = 120.0  # a container that takes longer than this to start is not coming


class WarmPool:
    def __init__(
        self,
        client: docker.DockerClient,
        image: str,
        limits: Limits,
        size: int,
        delivery: Delivery | None = None,
    ):
        if size < 1:
            raise ValueError("a warm pool needs size >= 1")
        self.client = client
        self.image = image
        self.limits = limits
        self.size = size
        self.delivery = delivery
        self._ready: queue.Queue[Slot | BaseException] = queue.Queue()
        self._starter = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sandbox-warm")
        self._closed = threading.Event()
        for _ in range(size):
            self._refill()

    def _refill(self) -> None:
        if not self._closed.is_set():
            self._starter.submit(self._start_one)

    def _start_one(self) -> None:
        try:
            slot = start_container(self.client, self.image, self.limits, self.delivery)
        except ENGINE_ERRORS as error:
            # The taker gets the error instead of waiting forever.
            self._ready.put(error)
            return
        if self._closed.is_set():
            discard(slot.container)
        else:
            self._ready.put(slot)

    def acquire(self) -> Slot:
        """A started container for exactly one run; raises what starting one raised."""
        if self._closed.is_set():
            raise RuntimeError("warm pool is closed")
        item = self._ready.get(timeout=ACQUIRE_TIMEOUT_S)
        self._refill()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Destroy the containers still waiting; idempotent."""
        self._closed.set()
        self._starter.shutdown(wait=True, cancel_futures=True)
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Slot):
                with contextlib.suppress(*ENGINE_ERRORS):
                    discard(item.container)
                remove_job_dir(item.job_dir)

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
