"""The work queue: coalescing, one worker per key, delays, per-key backoff, shutdown and its metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from controller.workqueue import Backoff, WorkQueue

pytestmark = pytest.mark.anyio


def sample(name: str, queue: str) -> float:
    return REGISTRY.get_sample_value(name, {"name": queue}) or 0.0


async def test_a_key_added_many_times_is_processed_once() -> None:
    q = WorkQueue("t-coalesce")
    for _ in range(5):
        q.add("ns/a")
    q.add("ns/b")
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["ns/a", "ns/b"]
    assert sample("workqueue_adds_total", "t-coalesce") == 2
    assert sample("workqueue_depth", "t-coalesce") == 0


async def test_a_key_is_never_given_to_two_workers() -> None:
    q = WorkQueue("t-exclusive")
    q.add("k")
    assert await q.get() == "k"
    q.add("k")  # an event while a worker holds the key
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    q.done("k")
    assert await asyncio.wait_for(waiting, 5) == "k"


async def test_add_after_delays_and_the_earliest_time_wins() -> None:
    q = WorkQueue("t-delay")
    q.add_after("k", 3600)
    q.add_after("k", 0.01)
    assert len(q) == 0
    assert await asyncio.wait_for(q.get(), 5) == "k"


async def test_rate_limited_retries_count_and_forget_resets() -> None:
    q = WorkQueue("t-retry", backoff=Backoff(base=0.001, cap=0.01))
    q.add_rate_limited("k")
    q.add_rate_limited("k")
    assert q.retries("k") == 2
    assert sample("workqueue_retries_total", "t-retry") == 2
    assert await asyncio.wait_for(q.get(), 5) == "k"
    q.forget("k")
    assert q.retries("k") == 0


def test_backoff_doubles_per_failure_with_jitter_and_a_cap() -> None:
    top = Backoff(base=1.0, cap=10.0, rng=lambda: 1.0)
    assert [top.when("k") for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    low = Backoff(base=1.0, cap=10.0, rng=lambda: 0.0)
    assert [low.when("k") for _ in range(3)] == [0.5, 1.0, 2.0]
    assert low.when("other") == 0.5  # per key


async def test_shutdown_wakes_waiting_workers_and_drops_new_keys() -> None:
    q = WorkQueue("t-shutdown")
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shut_down()
    assert await asyncio.wait_for(waiting, 5) is None
    q.add("k")
    assert await q.get() is None


async def test_in_flight_work_is_reported() -> None:
    now = [100.0]
    q = WorkQueue("t-flight", clock=lambda: now[0])
    q.add("k")
    await q.get()
    now[0] += 7
    assert sample("workqueue_unfinished_work_seconds", "t-flight") == 7
    assert sample("workqueue_longest_running_processor_seconds", "t-flight") == 7
    q.done("k")
    assert sample("workqueue_unfinished_work_seconds", "t-flight") == 0
