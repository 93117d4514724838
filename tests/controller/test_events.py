"""Events on AgentGroups: what ``kubectl describe`` shows, sent once per window, never failing a reconcile."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.events import EventRecorder
from shared.kube.raw import ApiError
from shared.kube.resources import EVENTS
from shared.planner import GroupEvent
from tests.controller.fake_api import FakeApi

pytestmark = pytest.mark.anyio

GROUP: dict[str, Any] = {
    "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
    "kind": "AgentGroup",
    "metadata": {"name": "g", "namespace": "ns", "uid": "u", "resourceVersion": "7"},
}
CREATED = GroupEvent("Normal", "SandboxCreated", 'Created Sandbox "g-a-0" for agent a')


def recorder(api: FakeApi, now: list[float]) -> EventRecorder:
    return EventRecorder(
        api, instance="pod-1", window=60, clock=lambda: now[0], wall=lambda: datetime(2030, 1, 1, tzinfo=UTC)
    )


async def test_an_event_names_the_group_and_the_component() -> None:
    api = FakeApi()
    assert await recorder(api, [0.0]).emit(GROUP, CREATED)
    (event,) = api.items(EVENTS, "ns")
    assert event["involvedObject"] == {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "AgentGroup",
        "name": "g",
        "namespace": "ns",
        "uid": "u",
        "resourceVersion": "7",
    }
    assert (event["type"], event["reason"], event["message"]) == ("Normal", "SandboxCreated", CREATED.message)
    assert event["source"] == {"component": "agentgroup-controller"}
    assert event["reportingInstance"] == "pod-1"
    assert event["firstTimestamp"] == "2030-01-01T00:00:00Z"


async def test_the_same_event_is_sent_once_per_window() -> None:
    api, now = FakeApi(), [0.0]
    rec = recorder(api, now)
    assert await rec.emit(GROUP, CREATED)
    now[0] = 59
    assert not await rec.emit(GROUP, CREATED)
    now[0] = 61
    assert await rec.emit(GROUP, CREATED)
    assert len(api.items(EVENTS, "ns")) == 2


async def test_a_failed_event_is_logged_not_raised() -> None:
    api = FakeApi()
    api.fail("create", EVENTS, ApiError(403, "Forbidden", "events is forbidden"))
    assert not await recorder(api, [0.0]).emit(GROUP, CREATED)


async def test_a_new_spec_generation_gets_its_events_again() -> None:
    api = FakeApi()
    rec = recorder(api, [0.0])
    running = GroupEvent("Normal", "Running", "all 1 Sandboxes are Ready")
    assert await rec.emit({**GROUP, "metadata": {**GROUP["metadata"], "generation": 1}}, running)
    assert await rec.emit({**GROUP, "metadata": {**GROUP["metadata"], "generation": 2}}, running)
