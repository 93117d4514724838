"""Runtime lookups: answered from the watch caches, confirmed by one GET on a miss, never stale."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.kube.raw import ApiError
from shared.kube.resources import AGENT_RUNTIMES, CODE_INTERPRETERS
from tests.webhook.fakes import NAMESPACE, FakeKube, runtime, wait_until
from webhook.admission import RuntimeLookup
from webhook.runtimes import RuntimeIndex

pytestmark = pytest.mark.anyio

PY = ("CodeInterpreter", "py-interp")
PLANNER = ("AgentRuntime", "planner-rt")


@pytest.fixture
def kube() -> FakeKube:
    kube = FakeKube()
    kube.put(CODE_INTERPRETERS, runtime(*PY))
    return kube


@pytest.fixture
async def index(kube: FakeKube) -> AsyncIterator[RuntimeIndex]:
    index = RuntimeIndex(kube, get_timeout=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(index.run(stop))
    await wait_until(lambda: index.synced, "the runtime caches to sync")
    yield index
    stop.set()
    await task


async def test_a_cached_runtime_is_found_without_asking_the_api_server(
    kube: FakeKube, index: RuntimeIndex
) -> None:
    assert await index.lookup(NAMESPACE, [PY]) == RuntimeLookup(frozenset({PY}))
    assert await index.lookup("team-b", [PY]) == RuntimeLookup(frozenset())
    assert kube.gets == [("CodeInterpreter", "py-interp", "team-b")]


async def test_a_runtime_the_watch_has_not_delivered_yet_is_confirmed_by_one_get(
    kube: FakeKube, index: RuntimeIndex
) -> None:
    kube.put(AGENT_RUNTIMES, runtime(*PLANNER), lag=True)
    assert await index.lookup(NAMESPACE, [PY, PLANNER]) == RuntimeLookup(frozenset({PY, PLANNER}))
    assert await index.lookup(NAMESPACE, [PLANNER]) == RuntimeLookup(frozenset({PLANNER}))
    assert kube.gets == [("AgentRuntime", "planner-rt", NAMESPACE)]  # one GET, then remembered

    kube.deliver()
    await wait_until(lambda: index.informers["AgentRuntime"].get("planner-rt", NAMESPACE), "the watch")
    assert await index.lookup(NAMESPACE, [PLANNER]) == RuntimeLookup(frozenset({PLANNER}))
    assert len(kube.gets) == 1


async def test_a_deleted_runtime_is_reported_missing(kube: FakeKube, index: RuntimeIndex) -> None:
    kube.put(AGENT_RUNTIMES, runtime(*PLANNER), lag=True)
    assert (await index.lookup(NAMESPACE, [PLANNER])).found == {PLANNER}  # confirmed by a GET
    kube.deliver()
    await wait_until(lambda: index.informers["AgentRuntime"].get("planner-rt", NAMESPACE), "the watch")
    kube.remove(AGENT_RUNTIMES, "planner-rt", NAMESPACE)
    await wait_until(lambda: not index.informers["AgentRuntime"].get("planner-rt", NAMESPACE), "the delete")
    assert await index.lookup(NAMESPACE, [PLANNER]) == RuntimeLookup(frozenset())


async def test_a_missing_runtime_is_checked_again_on_every_request(
    kube: FakeKube, index: RuntimeIndex
) -> None:
    for _ in range(2):
        assert await index.lookup(NAMESPACE, [PLANNER]) == RuntimeLookup(frozenset())
    assert len(kube.gets) == 2
    kube.put(AGENT_RUNTIMES, runtime(*PLANNER), lag=True)  # created a moment before the next request
    assert (await index.lookup(NAMESPACE, [PLANNER])).found == {PLANNER}


async def test_concurrent_misses_for_one_runtime_share_one_get(kube: FakeKube, index: RuntimeIndex) -> None:
    kube.put(AGENT_RUNTIMES, runtime(*PLANNER), lag=True)
    kube.get_gate = asyncio.Event()
    lookups = [asyncio.create_task(index.lookup(NAMESPACE, [PLANNER])) for _ in range(5)]
    await wait_until(lambda: kube.gets, "the GET")
    kube.get_gate.set()
    assert [(await t).found for t in lookups] == [{PLANNER}] * 5
    assert len(kube.gets) == 1


async def test_a_get_that_fails_names_the_error(kube: FakeKube, index: RuntimeIndex) -> None:
    kube.get_error = ApiError(403, "Forbidden", "cannot get agentruntimes")
    lookup = await index.lookup(NAMESPACE, [PY, PLANNER])
    assert lookup == RuntimeLookup(frozenset({PY}), {PLANNER: "403 Forbidden: cannot get agentruntimes"})


async def test_a_get_without_answer_times_out(kube: FakeKube, index: RuntimeIndex) -> None:
    kube.get_gate = asyncio.Event()  # never set
    lookup = await index.lookup(NAMESPACE, [PLANNER])
    assert lookup.failed == {PLANNER: "no answer from the API server within 0.2 s"}


async def test_references_that_cannot_exist_are_never_looked_up(kube: FakeKube, index: RuntimeIndex) -> None:
    lookup = await index.lookup(NAMESPACE, [("Deployment", "py-interp"), ("CodeInterpreter", "")])
    assert lookup == RuntimeLookup(frozenset())
    assert kube.gets == []


async def test_lookups_before_the_caches_sync_ask_the_api_server(kube: FakeKube) -> None:
    index = RuntimeIndex(kube)  # never run: a cold cache
    assert (await index.lookup(NAMESPACE, [PY])).found == {PY}
    assert kube.gets == [("CodeInterpreter", "py-interp", NAMESPACE)]
