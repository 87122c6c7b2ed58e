"""How many uploads the server works on at once, and how many may wait: the bound on its peak memory.

Why: every request decodes an image (up to ``max_pixels`` float32 pixels),
letterboxes it and, with a torch model, computes a heatmap; under load the
memory in use grows with the number of requests doing that at the same
time. FastAPI would run up to its thread pool's size (40) at once. Here at
most ``max_concurrent`` compute, at most ``max_queue`` more wait their turn
(bounded by ``wait_s``), and any request beyond that is answered at once with
503 and a ``Retry-After`` estimate, so peak memory is about the idle server
plus ``max_concurrent`` times one request's peak, whatever the load.

The work runs on a pool of exactly ``max_concurrent`` threads of our own, not
on the request threads. Measured (benchmarks/load_server.py, torch engine, 32
requests at a time): when the request threads took turns at the work (each
one, it seems, growing a glibc malloc arena of its own), a warm-up grew the
server from 0.73 to 1.53 GB whatever ``max_concurrent`` was; with the pool it
grows to 0.94 GB at ``max_concurrent=1`` and 1.05 GB at 4.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Busy(Exception):
    """The server is at its limit; ``retry_after`` is a whole number of seconds to wait before trying again."""

    retry_after: int
    reason: str

    def __str__(self) -> str:
        return self.reason


class Admission:
    """Counts requests in (computing + waiting) and runs at most ``max_concurrent`` of them at a time."""

    def __init__(self, max_concurrent: int = 2, max_queue: int = 32, wait_s: float = 60.0) -> None:
        if max_concurrent < 1 or max_queue < 0 or wait_s <= 0:
            raise ValueError(f"need max_concurrent >= 1, max_queue >= 0 and wait_s > 0; got {max_concurrent}, "
                             f"{max_queue}, {wait_s}")
        self.max_concurrent, self.max_queue, self.wait_s = max_concurrent, max_queue, wait_s
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="xraylens-compute")
        self._lock = threading.Lock()
        self._inside = 0  # computing + waiting
        self._seconds = 1.0  # running mean of one request's compute time, for Retry-After

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` on one of the computing threads; raises :class:`Busy` when full or the wait runs out."""
        with self._lock:
            if self._inside >= self.max_concurrent + self.max_queue:
                raise Busy(self._retry_after(self._inside), (
                    f"server busy: {self.max_concurrent} request(s) computing and {self.max_queue} waiting "
                    "(its limits, --max-concurrent and --max-queue); retry later"))
            self._inside += 1
        try:
            future = self._pool.submit(self._timed, work)
            try:
                return future.result(timeout=self.wait_s)
            except FutureTimeout:
                if future.cancel():  # still queued: it never started
                    raise Busy(self._retry_after(self._inside), (
                        f"server busy: no computing slot came free within {self.wait_s:g} s; retry later"
                    )) from None
                return future.result()  # started: let it finish
        finally:
            with self._lock:
                self._inside -= 1

    def _timed(self, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return work()
        finally:
            with self._lock:
                self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - started)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _retry_after(self, ahead: int) -> int:
        return max(1, math.ceil(self._seconds * (ahead + 1) / self.max_concurrent))

    def status(self) -> dict[str, int]:
        """What ``/api/health`` reports: requests in, and the limits."""
        with self._lock:
            inside = self._inside
        return {"in_progress": inside, "max_concurrent": self.max_concurrent, "max_queue": self.max_queue}
