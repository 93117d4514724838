"""The controller end to end against an in-memory API: every phase transition and failure policy, the
writes it makes, restarts, API failures, discovery and leader election."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from controller.leader import LeaderConfig
from shared.kube.raw import ApiError
from shared.kube.resources import (
    AGENT_GROUPS,
    EVENTS,
    SANDBOX_CLAIM_GROUP,
    SANDBOX_GROUP,
    SANDBOXES_V1ALPHA1,
    SANDBOXES_V1BETA1,
)
from shared.planner import PlanConfig
from tests.controller.fake_api import FakeApi
from tests.controller.harness import (
    SERVED,
    add_group,
    add_runtime,
    condition,
    group,
    mark_ready,
    options,
    phase,
    ready_as_created,
    running,
    sandbox_names,
    wait_until,
)
from tests.controller.objects import NS, agent, group_obj

pytestmark = pytest.mark.anyio

CHAIN = [agent(n) for n in "abcde"]
EDGES = list(zip("abcd", "bcde", strict=True))


def status_patches(api: FakeApi) -> int:
    return api.writes["patch", "agentgroups/status"]


def reconciles() -> float:
    return sum(
        REGISTRY.get_sample_value(
            "controller_runtime_reconcile_total", {"controller": "agentgroup", "result": r}
        )
        or 0.0
        for r in ("success", "error", "requeue", "requeue_after")
    )


def event_reasons(api: FakeApi) -> list[str]:
    return [e["reason"] for e in api.items(EVENTS, NS)]


async def test_a_chain_starts_in_order_with_one_create_per_agent_and_two_status_writes() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api):
        await add_group(api, group_obj(CHAIN, EDGES))
        await wait_until(lambda: sandbox_names(api) == ["g-a-0"], "the first agent's Sandbox")
        await wait_until(lambda: phase(api) == "Initializing", "Initializing")
        assert group(api)["status"]["agents"][1]["waitingFor"] == ["a"]
        await ready_as_created(api)
        assert sandbox_names(api) == ["g-a-0", "g-b-0", "g-c-0", "g-d-0", "g-e-0"]
        assert api.writes["create", "sandboxes"] == 5
        assert status_patches(api) == 2
        assert condition(api, "Ready")["reason"] == "FleetReady"
        assert event_reasons(api).count("SandboxCreated") == 5
        assert {"Initializing", "Running"} <= set(event_reasons(api))


async def test_a_steady_fleet_causes_no_writes() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api) as manager:
        await add_group(api, group_obj([agent("a", replicas=2)]))
        await ready_as_created(api)
        before = sum(api.writes.values())
        # Events that make the controller look again without changing anything.
        for name in sandbox_names(api):
            await api.patch(SANDBOXES_V1BETA1, name, {"metadata": {"labels": {"touched": "yes"}}}, NS)
        seen = reconciles()
        await api.patch(AGENT_GROUPS, "g", {"metadata": {"annotations": {"note": "hi"}}}, NS)
        touches = 3
        await wait_until(lambda: reconciles() > seen, "the controller to look again")
        await wait_until(lambda: len(manager.queue) == 0 and manager.queue.unfinished_seconds() == 0, "idle")
        assert sum(api.writes.values()) == before + touches


async def test_an_invalid_group_is_failed_and_recovers_when_its_runtime_appears() -> None:
    api = FakeApi(served=SERVED)
    async with running(api):
        await add_group(api, group_obj([agent("a", "late")]))
        await wait_until(lambda: phase(api) == "Failed", "Failed")
        assert condition(api, "Ready")["reason"] == "RuntimeNotFound"
        assert sandbox_names(api) == []
        await add_runtime(api, "late")
        await wait_until(lambda: sandbox_names(api) == ["g-a-0"], "the Sandbox once the runtime exists")
        assert phase(api) == "Initializing"


async def test_fail_fast_fails_a_running_group_that_loses_a_sandbox() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api):
        await add_group(api, group_obj([agent("a"), agent("b")]))
        await ready_as_created(api)
        await api.delete(SANDBOXES_V1BETA1, "g-b-0", NS)
        await wait_until(lambda: phase(api) == "Failed", "Failed")
        assert condition(api, "Ready")["message"] == 'Sandbox "g-b-0" of agent b is gone'
        assert sandbox_names(api) == ["g-a-0"]
        assert "AgentLost" in event_reasons(api)


async def test_retry_sub_agent_recreates_and_recovers() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api):
        await add_group(api, group_obj([agent("a"), agent("b")], policy="RetrySubAgent"))
        await ready_as_created(api)
        old = api.obj(SANDBOXES_V1BETA1, "g-b-0", NS)
        assert old is not None
        await api.delete(SANDBOXES_V1BETA1, "g-b-0", NS)
        await wait_until(lambda: "g-b-0" in sandbox_names(api), "the recreated Sandbox")
        await wait_until(lambda: condition(api, "Degraded")["status"] == "True", "Degraded")
        retries = group(api)["metadata"]["annotations"]["runtime.agentcube.io/sandbox-retries"]
        assert '"g-b-0":[1,' in retries
        await mark_ready(api, "g-b-0")
        await wait_until(lambda: condition(api, "Degraded")["status"] == "False", "recovery")
        assert phase(api) == "Running"
        assert {"SandboxRecreated", "Degraded", "Recovered"} <= set(event_reasons(api))


async def test_continue_degraded_keeps_running() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api):
        await add_group(api, group_obj([agent("a"), agent("b")], policy="ContinueDegraded"))
        await ready_as_created(api)
        await mark_ready(api, "g-a-0", ready=False)
        await wait_until(lambda: condition(api, "Degraded")["status"] == "True", "Degraded")
        assert phase(api) == "Running"
        assert group(api)["status"]["readyAgents"] == 1


async def test_spec_changes_add_remove_and_scale() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api):
        await add_group(api, group_obj([agent("a", replicas=3), agent("b")]))
        await ready_as_created(api)
        spec = {
            "agents": [{"name": "a", "replicas": 1, "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}}]
        }
        spec["agents"].append({"name": "c", "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}})
        await api.patch(AGENT_GROUPS, "g", {"spec": spec}, NS)
        await wait_until(
            lambda: sandbox_names(api) == ["g-a-0", "g-c-0"], "a scaled to 1, b removed, c added"
        )
        await ready_as_created(api)
        assert group(api)["status"]["observedGeneration"] == 2
        assert group(api)["status"]["totalAgents"] == 2


async def test_deleting_the_group_leaves_the_sandboxes_to_the_garbage_collector() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api):
        await add_group(api, group_obj([agent("a", replicas=2)]))
        await wait_until(lambda: len(sandbox_names(api)) == 2, "two Sandboxes")
        await api.delete(AGENT_GROUPS, "g", NS)
        await wait_until(lambda: sandbox_names(api) == [], "the Sandboxes to go with their group")
        assert api.writes["delete", "sandboxes"] == 0  # the controller deleted nothing itself


async def test_a_restart_converges_without_duplicates() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    for i in range(10):
        await add_group(api, group_obj(CHAIN, EDGES, name=f"g{i}"))
    async with running(api):
        await wait_until(lambda: len(sandbox_names(api)) == 10, "every group's first Sandbox")
    # The next process starts from nothing but what the API holds.
    async with running(api):
        for i in range(10):
            await ready_as_created(api, f"g{i}")
    assert len(sandbox_names(api)) == 50
    assert api.writes["create", "sandboxes"] == 50


async def test_api_errors_are_retried_with_backoff() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    api.fail("create", SANDBOXES_V1BETA1, ApiError(500, "InternalError", "etcd is having a bad day"))
    api.fail("create", SANDBOXES_V1BETA1, ApiError(0, "ConnectionError", "connection reset"))
    async with running(api) as manager:
        await add_group(api, group_obj([agent("a")]))
        await ready_as_created(api)
        assert manager.queue.retries("team-a/g") == 0  # forgotten after the success
    assert api.faults == []


async def test_the_sandbox_api_version_is_discovered() -> None:
    api = FakeApi(served={SANDBOX_GROUP: ["v1alpha1"]})
    await add_runtime(api)
    async with running(api):
        await add_group(api, group_obj([agent("a")]))
        await wait_until(lambda: sandbox_names(api, SANDBOXES_V1ALPHA1) == ["g-a-0"], "a v1alpha1 Sandbox")
        sandbox = api.obj(SANDBOXES_V1ALPHA1, "g-a-0", NS)
        assert sandbox is not None
        assert sandbox["spec"]["replicas"] == 1


async def test_without_the_sandbox_api_it_waits_and_is_not_ready() -> None:
    api = FakeApi(served={})
    await add_runtime(api)
    await add_group(api, group_obj([agent("a")]))
    async with running(api) as manager:
        assert manager.ops.readiness() == {"informers-synced": False}
        api.served.update({SANDBOX_GROUP: ["v1beta1"], SANDBOX_CLAIM_GROUP: []})
        await wait_until(lambda: sandbox_names(api) == ["g-a-0"], "work once Sandboxes are served")
        assert manager.ops.readiness() == {"informers-synced": True}


async def test_the_startup_deadline_fails_a_slow_group() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api, options(plan=PlanConfig(startup_timeout=timedelta(milliseconds=200)))):
        await add_group(api, group_obj([agent("a")]))
        await wait_until(lambda: phase(api) == "Failed", "the deadline")
        assert condition(api, "Ready")["reason"] == "DeadlineExceeded"


async def test_progress_is_written_at_most_once_per_interval() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)
    async with running(api, options(status_interval=0.0)):
        await add_group(api, group_obj(CHAIN, EDGES))
        await ready_as_created(api)
        assert status_patches(api) > 2  # every step of the chain was written at once


async def test_two_replicas_one_leader() -> None:
    api = FakeApi(served=SERVED)
    await add_runtime(api)

    def lease(identity: str) -> LeaderConfig:
        return LeaderConfig(
            "agentgroup-controller", NS, identity, lease_duration=0.5, renew_deadline=0.3, retry_period=0.05
        )

    async with (
        running(api, options(leader=lease("one")), "one") as one,
        running(api, options(leader=lease("two")), "two") as two,
    ):
        await wait_until(lambda: one.elector is not None and two.elector is not None, "both to campaign")
        assert one.elector is not None
        assert two.elector is not None
        electors = (one.elector, two.elector)
        await wait_until(lambda: sum(e.is_leader for e in electors) == 1, "one leader")
        await add_group(api, group_obj([agent("a")]))
        await ready_as_created(api)
        assert api.writes["create", "sandboxes"] == 1
