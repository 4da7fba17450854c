"""A timer thread that hands due work to a bounded thread pool."""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)
_CLEAR = object()
_STOP = object()


class Scheduler:
    """Runs callables on a bounded pool once their delay has passed.

    Callers only put work on a lock-free queue, so scheduling never waits for the
    timer thread, and a delay never occupies a pool worker. Quick work that
    never blocks may run on the timer thread itself (`inline`), saving the hop
    to a pool thread.
    """

    def __init__(self, workers: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-callback")
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._timer = threading.Thread(target=self._run, name="sandbox-timer", daemon=True)
        self._timer.start()

    def call_later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the pool after delay_s seconds; ignored once shut down."""
        if not self._closed:
            self._inbox.put((time.monotonic() + delay_s, fn, args, False))

    def call_later_inline(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the timer thread after delay_s seconds: for quick, non-blocking work."""
        if not self._closed:
            self._inbox.put((time.monotonic() + delay_s, fn, args, True))

    def clear(self) -> None:
        """Drop all work that was scheduled before this call and is not yet running."""
        self._inbox.put(_CLEAR)

    def _run(self) -> None:
        """Keep a private heap of scheduled work and submit each item when it is due."""
        heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...], bool]] = []
        order = itertools.count()
        while True:
            timeout = max(0.0, heap[0][0] - time.monotonic()) if heap else None
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if item is _CLEAR:
                heap.clear()
            elif item is not None:
                due, fn, args, inline = item
                heapq.heappush(heap, (due, next(order), fn, args, inline))
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, _, fn, args, inline = heapq.heappop(heap)
                if inline:
                    self._run_inline(fn, args)
                else:
                    self._pool.submit(fn, *args)

    @staticmethod
    def _run_inline(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run quick work on the timer thread; a failure must not stop the timer."""
        try:
            fn(*args)
        except Exception:
            log.exception("sandbox: scheduled work failed")

    def shutdown(self) -> None:
        """Stop the timer, drop pending work and wait for running work to finish."""
        self._closed = True
        self._inbox.put(_STOP)
        self._timer.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
