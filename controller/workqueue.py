"""A de-duplicating work queue with per-key backoff, in the manner of client-go's workqueue.

* A key added many times before a worker takes it is processed once (coalescing).
* A key is never handed to two workers at once: added while being processed, it is queued again
  only when the worker calls :meth:`WorkQueue.done`.
* ``add_after`` delays a key (the earliest pending time wins); ``add_rate_limited`` delays it by the
  key's own exponential backoff with jitter, capped, until :meth:`WorkQueue.forget` resets it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable

from controller import metrics


class Backoff:
    """Per-key exponential backoff: ``base * 2**failures``, capped, scaled by a jitter in [0.5, 1]."""

    def __init__(
        self, base: float = 0.05, cap: float = 300.0, *, rng: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        """The delay before retrying ``key`` once more; counts one more failure."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(self.cap, self.base * 2.0 ** min(n, 60)) * (0.5 + self._rng() / 2)

    def retries(self, key: str) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


class WorkQueue:
    def __init__(
        self, name: str, *, backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._queue: deque[str] = deque()
        self._dirty: dict[str, float] = {}  # queued keys -> when they were added
        self._processing: dict[str, float] = {}  # keys being processed -> when a worker took them
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False
        self._depth = metrics.QUEUE_DEPTH.labels(name)
        self._adds = metrics.QUEUE_ADDS.labels(name)
        self._latency = metrics.QUEUE_LATENCY.labels(name)
        self._work = metrics.WORK_DURATION.labels(name)
        self._retries = metrics.QUEUE_RETRIES.labels(name)
        metrics.UNFINISHED_WORK.labels(name).set_function(self.unfinished_seconds)
        metrics.LONGEST_RUNNING.labels(name).set_function(self.longest_running_seconds)
        self._depth.set(0)

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._adds.inc()
        self._dirty[key] = self._clock()
        if key in self._processing:
            return  # queued again by done()
        self._push(key)

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds, unless it is already due sooner."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def add_rate_limited(self, key: str) -> float:
        """Retry ``key`` after its backoff; returns the delay."""
        self._retries.inc()
        delay = self.backoff.when(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """``key`` succeeded: its next failure starts the backoff from the beginning."""
        self.backoff.forget(key)

    def retries(self, key: str) -> int:
        return self.backoff.retries(key)

    async def get(self) -> str | None:
        """The next key to process, waiting for one; ``None`` once the queue is shut down.

        Keys still queued at shutdown are left for whoever runs next (the next leader relists anyway).
        """
        while not self._queue or self._shutting_down:
            if self._shutting_down:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif self._queue:
                    self._wake_one()  # pass on the wake-up this cancelled get() received
                raise
        key = self._queue.popleft()
        self._depth.set(len(self._queue))
        now = self._clock()
        self._latency.observe(now - self._dirty.pop(key, now))
        self._processing[key] = now
        return key

    def done(self, key: str) -> None:
        """The worker finished ``key``; if it was added meanwhile, it is queued again now."""
        started = self._processing.pop(key, None)
        if started is not None:
            self._work.observe(self._clock() - started)
        if key in self._dirty:
            self._push(key)

    def shut_down(self) -> None:
        """Stop accepting keys and wake every waiting ``get`` (which returns ``None``)."""
        self._shutting_down = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._wake_all()

    def unfinished_seconds(self) -> float:
        now = self._clock()
        return sum(now - t for t in self._processing.values())

    def longest_running_seconds(self) -> float:
        now = self._clock()
        return max((now - t for t in self._processing.values()), default=0.0)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _push(self, key: str) -> None:
        self._queue.append(key)
        self._depth.set(len(self._queue))
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
