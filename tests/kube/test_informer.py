"""The informer against an in-memory API: sync, watch, resume, relist-and-diff on 410, backoff."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY

from shared.kube.informer import EventType, Informer
from shared.kube.raw import ApiError
from shared.kube.resources import CONFIG_MAPS, NAMESPACES
from tests.kube.fakes import FakeApi, configmap

pytestmark = pytest.mark.anyio

Seen = list[tuple[EventType, str]]


async def until(predicate: Callable[[], bool], what: str, deadline: float = 5.0) -> None:
    """Wait for state owned by the informer's task, failing after ``deadline`` seconds."""
    try:
        with anyio.fail_after(deadline):
            while not predicate():  # noqa: ASYNC110 - the state has no event of its own to wait on
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@asynccontextmanager
async def running(api: FakeApi, seen: Seen | None = None, **kwargs: Any) -> AsyncIterator[Informer]:
    """A synced informer over ``api`` recording (type, name) of each change into ``seen``."""

    def record(kind: EventType, obj: dict[str, Any]) -> None:
        if seen is not None:
            seen.append((kind, obj["metadata"]["name"]))

    kwargs.setdefault("backoff_base", 0.001)
    kwargs.setdefault("name", f"test-{uuid.uuid4().hex[:8]}")
    informer = Informer(api, CONFIG_MAPS, namespace="ns", handler=record, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    try:
        with anyio.fail_after(5):
            await informer.synced.wait()
        yield informer
    finally:
        stop.set()
        with anyio.fail_after(5):
            await task


def names(informer: Informer) -> set[str]:
    return {obj["metadata"]["name"] for obj in informer.items()}


def sample(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


async def test_first_list_reports_every_object_before_synced() -> None:
    api = FakeApi()
    await api.put(configmap("a"))
    await api.put(configmap("b"))
    seen: Seen = []
    async with running(api, seen) as informer:
        assert sorted(seen) == [("ADDED", "a"), ("ADDED", "b")]
        assert names(informer) == {"a", "b"}
        assert len(informer) == 2
        assert informer.get("a") == api.objects[("ns", "a")]
        assert informer.get("a", "other") is None
        assert informer.get("missing") is None
        await until(lambda: len(api.watches) == 1, "the watch")
        assert api.watches == [str(api.rv)]
        assert api.bookmarks_requested == [True]


async def test_watch_events_update_the_cache_and_reach_the_handler() -> None:
    api = FakeApi()
    await api.put(configmap("a"))
    seen: Seen = []
    async with running(api, seen) as informer:
        seen.clear()
        await api.put(configmap("b"))
        await api.put(configmap("a", x="1"))
        await api.remove("b")
        await until(lambda: len(seen) == 3, "three changes")
        assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        assert names(informer) == {"a"}
        assert informer.get("a") == api.objects[("ns", "a")]
        assert informer.resource_version == str(api.rv)
        assert sample("agentgroup_informer_objects", resource=informer.name) == 1
        assert sample("agentgroup_informer_synced", resource=informer.name) == 1


async def test_not_synced_until_the_first_list_succeeds() -> None:
    api = FakeApi()
    api.list_errors = [
        ApiError(503, "ServiceUnavailable", "etcd is down"),
        ApiError(0, "ConnectionError", "x"),
    ]
    informer = Informer(api, CONFIG_MAPS, backoff_base=0.001, name=f"test-{uuid.uuid4().hex[:8]}")
    assert sample("agentgroup_informer_synced", resource=informer.name) == 0
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    with anyio.fail_after(5):
        await informer.synced.wait()
    assert api.lists == 3
    assert sample("agentgroup_informer_synced", resource=informer.name) == 1
    stop.set()
    await task


async def test_gone_during_a_list_backs_off_instead_of_spinning(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    api.list_errors = [ApiError(410, "Expired", "continue token expired")]
    informer = Informer(api, CONFIG_MAPS, backoff_base=3600, backoff_cap=3600)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="shared.kube.informer"):
        task = asyncio.create_task(informer.run(stop))
        await until(lambda: any("list failed: 410 Expired" in r.message for r in caplog.records), "the log")
    assert api.lists == 1
    stop.set()
    await task


async def test_bookmarks_advance_the_resource_version_silently() -> None:
    api = FakeApi()
    seen: Seen = []
    async with running(api, seen) as informer:
        await api.bookmark()
        await until(lambda: informer.resource_version == str(api.rv), "the bookmark")
        assert seen == []
        await api.end_watches()
        await until(lambda: len(api.watches) == 2, "the second watch")
        assert api.watches[1] == str(api.rv)


async def test_an_ended_watch_resumes_from_the_last_version_without_relisting() -> None:
    api = FakeApi()
    seen: Seen = []
    async with running(api, seen) as informer:
        await api.put(configmap("a"))
        await until(lambda: informer.get("a") is not None, "a")
        last = informer.resource_version
        await api.end_watches()
        await until(lambda: len(api.watches) == 2, "the second watch")
        await api.put(configmap("b"))
        await until(lambda: informer.get("b") is not None, "b")
        assert api.watches[1] == last
        assert api.lists == 1
        assert seen == [("ADDED", "a"), ("ADDED", "b")]


@pytest.mark.parametrize("as_event", [False, True], ids=["http-410", "error-event"])
async def test_gone_relists_and_reports_what_changed_in_the_gap(as_event: bool) -> None:
    api = FakeApi(gone_as_event=as_event)
    for name in ("keep", "change", "drop"):
        await api.put(configmap(name))
    seen: Seen = []
    async with running(api, seen) as informer:
        seen.clear()
        # Cut the informer off, change things it cannot see, and forget the history.
        api.gate.clear()
        await api.end_watches()
        await until(lambda: len(api.watches) == 2, "the informer to re-watch")
        await api.put(configmap("change", x="2"))
        await api.remove("drop")
        await api.put(configmap("new"))
        api.compact()
        api.gate.set()

        await until(lambda: api.lists == 2, "the relist")
        await until(lambda: len(seen) == 3, "the diff")
        assert sorted(seen) == [("ADDED", "new"), ("DELETED", "drop"), ("MODIFIED", "change")]
        assert names(informer) == {"keep", "change", "new"}
        assert informer.get("change") == api.objects[("ns", "change")]
        assert sample("agentgroup_informer_relists_total", resource=informer.name, reason="gone") == 1
        assert sample("agentgroup_informer_objects", resource=informer.name) == 3

        # And it watches on from the relist.
        await until(lambda: len(api.watches) == 3, "the watch after the relist")
        assert api.watches[2] == str(api.rv)
        await api.put(configmap("later"))
        await until(lambda: informer.get("later") is not None, "an event after the relist")


async def test_connection_errors_back_off_and_resume_from_the_same_version() -> None:
    api = FakeApi()
    seen: Seen = []
    api.watch_errors = [
        ApiError(0, "ConnectionError", "connection refused"),
        ApiError(500, "InternalError", "boom"),
        ApiError(429, "TooManyRequests", "slow down"),
    ]
    async with running(api, seen) as informer:
        await until(lambda: len(api.watches) == 4, "three retries")
        assert set(api.watches) == {informer.resource_version}
        await api.put(configmap("a"))
        await until(lambda: seen == [("ADDED", "a")], "the event after reconnecting")
        assert api.lists == 1


async def test_unexpected_failures_are_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeApi):
        async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
            yield {"type": "ADDED", "object": "not an object"}

    broken = Broken()
    with caplog.at_level(logging.WARNING, logger="shared.kube.informer"):
        async with running(broken) as informer:
            await until(
                lambda: sum("unexpected failure" in r.message for r in caplog.records) >= 2, "retries"
            )
            assert len(informer) == 0


async def test_a_failing_handler_is_logged_and_does_not_stop_the_informer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi()
    handled: list[str] = []

    def handler(kind: EventType, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "bad":
            raise RuntimeError("handler bug")
        handled.append(obj["metadata"]["name"])

    informer = Informer(api, CONFIG_MAPS, handler=handler, name=f"test-{uuid.uuid4().hex[:8]}")
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    with caplog.at_level(logging.ERROR, logger="shared.kube.informer"):
        await until(informer.synced.is_set, "sync")
        await api.put(configmap("bad"))
        await api.put(configmap("good"))
        await until(lambda: handled == ["good"], "the next event")
    assert informer.get("bad", "ns") is not None
    assert any("handler failed on ADDED ns/bad" in r.message for r in caplog.records)
    stop.set()
    await task


async def test_stop_ends_run_while_a_watch_is_open() -> None:
    api = FakeApi()
    informer = Informer(api, CONFIG_MAPS)
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    await until(lambda: len(api.watches) == 1, "the watch")
    stop.set()
    with anyio.fail_after(5):
        await task


async def test_stop_ends_run_during_backoff() -> None:
    api = FakeApi()
    api.list_errors = [ApiError(0, "ConnectionError", "down")]
    informer = Informer(api, CONFIG_MAPS, backoff_base=3600, backoff_cap=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    await until(lambda: api.lists == 1, "the failed list")
    stop.set()
    with anyio.fail_after(5):
        await task
    assert not informer.synced.is_set()


async def test_cluster_scoped_get_ignores_the_namespace() -> None:
    api = FakeApi()
    await api.put({"metadata": {"name": "team-a"}})
    informer = Informer(api, NAMESPACES, name=f"test-{uuid.uuid4().hex[:8]}")
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    await until(informer.synced.is_set, "sync")
    assert informer.get("team-a") is not None
    assert informer.get("team-a", "whatever") is not None
    stop.set()
    await task


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    informer = Informer(FakeApi(), CONFIG_MAPS, backoff_base=1.0, backoff_cap=8.0)
    delays = []
    for failures in (1, 2, 3, 4, 5, 50):
        informer._failures = failures
        delays.append(informer._backoff())
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
