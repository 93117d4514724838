"""The desired-state planner: phases, conditions, ordered startup, failure policies, spec changes,
the startup deadline and recovery, each as a user reads it in the group's status and events."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from shared.models import Runtime
from shared.planner import PlanConfig
from shared.status import Change
from tests.controller.objects import (
    GROUP_UID,
    World,
    agent,
    agent_runtime,
    code_interpreter,
    group_obj,
)

PY = code_interpreter("py")
RT = agent_runtime("rt")


def two_agents(policy: str | None = None) -> World:
    agents = [agent("planner", "rt", kind="AgentRuntime"), agent("coder")]
    return World(group_obj(agents, policy=policy), [PY, RT])


def reasons(world: World) -> list[str]:
    return [reason for _, reason, _ in world.events]


# --- the rows of the original PR ------------------------------------------------------------------


def test_new_group_is_initializing_with_zero_of_two_ready() -> None:
    w = two_agents()
    p = w.step()
    assert w.phase == "Initializing"
    assert (w.status["readyAgents"], w.status["totalAgents"]) == (0, 2)
    assert sorted(c.body["metadata"]["name"] for c in p.creates) == ["g-coder-0", "g-planner-0"]
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Accepted")
    assert w.condition("Progressing")["status"] == "True"
    assert w.status["observedGeneration"] == 1
    assert w.status["startTime"] == "2030-01-01T12:00:00Z"
    assert reasons(w) == ["Initializing", "SandboxCreated", "SandboxCreated"]


def test_all_ready_is_running() -> None:
    w = two_agents()
    w.step()
    w.mark_ready()
    w.step()
    assert w.phase == "Running"
    assert (w.status["readyAgents"], w.status["totalAgents"]) == (2, 2)
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("True", "FleetReady")
    assert w.condition("Progressing")["status"] == "False"
    assert w.condition("Degraded")["status"] == "False"
    assert [a["phase"] for a in w.status["agents"]] == ["Ready", "Ready"]
    assert reasons(w)[-1] == "Running"


def test_partly_ready_is_initializing_with_one_of_two() -> None:
    w = two_agents()
    w.step()
    w.mark_ready("g-planner-0")
    w.step()
    assert w.phase == "Initializing"
    assert w.status["readyAgents"] == 1
    assert w.agent("planner")["phase"] == "Ready"
    assert w.agent("coder") | {"message": ""} == {
        "name": "coder",
        "phase": "Starting",
        "sandboxNames": ["g-coder-0"],
        "readyReplicas": 0,
        "message": "",
        "waitingFor": [],
    }
    assert w.agent("coder")["message"] == "0 of 1 Sandboxes Ready"


@pytest.mark.parametrize(
    ("spec", "runtimes", "reason", "in_message"),
    [
        (
            group_obj([agent("a"), agent("a")]),
            [PY],
            "InvalidSpec",
            'spec.agents[1].name: DuplicateAgentName: "a" is already the name of spec.agents[0]',
        ),
        (
            group_obj([agent("a", "ghost-rt")]),
            [PY],
            "RuntimeNotFound",
            'spec.agents[0].runtimeRef: RuntimeNotFound: CodeInterpreter "ghost-rt" does not exist',
        ),
        (group_obj([agent("a")], topology="Peer"), [PY], "UnsupportedTopology", "spec.topology"),
        (
            group_obj([agent("a")], [("a", "ghost")]),
            [PY],
            "InvalidSpec",
            'spec.dependencies[0].to: UnknownAgent: "ghost" is not an agent of this group',
        ),
    ],
    ids=["duplicate-name", "missing-runtime", "peer", "unknown-dependency"],
)
def test_invalid_group_fails_with_its_reason(
    spec: dict[str, Any], runtimes: list[Runtime], reason: str, in_message: str
) -> None:
    w = World(spec, runtimes)
    p = w.step()
    assert w.phase == "Failed"
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert in_message in ready["message"]
    assert p.creates == ()
    assert p.deletes == ()
    assert w.events[0][:2] == ("Warning", reason)


def test_missing_runtime_names_the_agent() -> None:
    w = World(group_obj([agent("a", "ghost-rt"), agent("b")]), [PY])
    w.step()
    assert w.agent("a")["phase"] == "Failed"
    assert 'CodeInterpreter "ghost-rt" does not exist in namespace "team-a"' in w.agent("a")["message"]
    assert w.agent("b")["phase"] != "Failed"


def test_running_group_losing_a_sandbox_under_failfast_fails_with_agent_lost() -> None:
    w = two_agents()
    w.run_until_running()
    w.lose("g-coder-0")
    p = w.step()
    assert w.phase == "Failed"
    ready = w.condition("Ready")
    assert (ready["reason"], ready["message"]) == ("AgentLost", 'Sandbox "g-coder-0" of agent coder is gone')
    assert w.agent("coder")["phase"] == "Failed"
    assert p.creates == ()
    assert w.events[-1] == ("Warning", "AgentLost", 'Sandbox "g-coder-0" of agent coder is gone')


def test_failfast_also_fails_when_a_sandbox_stops_being_ready() -> None:
    w = two_agents()
    w.run_until_running()
    w.mark_ready("g-planner-0", ready=False)
    w.step()
    assert w.phase == "Failed"
    assert w.condition("Ready")["message"] == 'Sandbox "g-planner-0" of agent planner is not Ready'


def test_failed_is_final_for_the_generation() -> None:
    w = two_agents()
    w.run_until_running()
    w.lose("g-coder-0")
    w.step()
    written = len(w.status_changes)
    w.advance(3600)
    p = w.step()
    assert len(w.status_changes) == written  # a failed group's status holds still
    assert w.phase == "Failed"
    assert p.creates == ()
    w.edit_spec(failurePolicy="RetrySubAgent")  # a new generation starts again
    p = w.step()
    assert w.phase == "Initializing"
    assert [c.body["metadata"]["name"] for c in p.creates] == ["g-coder-0"]


def test_replicas_three_makes_three_owned_sandboxes() -> None:
    w = World(group_obj([agent("a", replicas=3)]), [PY])
    p = w.step()
    names = [c.body["metadata"]["name"] for c in p.creates]
    assert names == ["g-a-0", "g-a-1", "g-a-2"]
    for c in p.creates:
        (ref,) = c.body["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
            "kind": "AgentGroup",
            "name": "g",
            "uid": GROUP_UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    assert w.status["totalAgents"] == 3
    w.mark_ready()
    w.step()
    assert w.agent("a")["sandboxNames"] == names
    assert w.agent("a")["readyReplicas"] == 3


# --- ordered startup --------------------------------------------------------------------------------


def test_agents_start_in_dependency_order() -> None:
    w = World(group_obj([agent("c"), agent("b"), agent("a")], [("a", "b"), ("b", "c")]), [PY])
    p = w.step()
    assert [c.body["metadata"]["name"] for c in p.creates] == ["g-a-0"]
    assert w.agent("c") | {"message": ""} == {
        "name": "c",
        "phase": "Waiting",
        "sandboxNames": [],
        "readyReplicas": 0,
        "message": "",
        "waitingFor": ["b"],
    }
    assert w.agent("c")["message"] == "waiting for b to be Ready; 0 of 1 Sandboxes Ready"
    assert w.step().creates == ()  # a is not Ready yet: nothing more starts
    w.mark_ready("g-a-0")
    assert [c.body["metadata"]["name"] for c in w.step().creates] == ["g-b-0"]
    w.mark_ready("g-b-0")
    assert [c.body["metadata"]["name"] for c in w.step().creates] == ["g-c-0"]
    w.mark_ready("g-c-0")
    w.step()
    assert w.phase == "Running"


def test_an_agent_waits_for_every_replica_of_its_dependency() -> None:
    w = World(group_obj([agent("a", replicas=2), agent("b")], [("a", "b")]), [PY])
    w.step()
    w.mark_ready("g-a-0")
    assert w.step().creates == ()
    assert w.agent("b")["waitingFor"] == ["a"]
    w.mark_ready("g-a-1")
    assert [c.body["metadata"]["name"] for c in w.step().creates] == ["g-b-0"]


def test_happy_path_has_two_status_transitions_whatever_the_chain() -> None:
    names = [f"a{i}" for i in range(5)]
    w = World(group_obj([agent(n) for n in names], itertools.pairwise(names)), [PY])
    w.run_until_running()
    assert len(w.created) == 5
    assert w.status_changes.count(Change.TRANSITION) == 2  # Initializing, then Running
    assert reasons(w).count("SandboxCreated") == 5


# --- steady state and idempotence --------------------------------------------------------------------


def test_a_steady_fleet_plans_nothing() -> None:
    w = two_agents()
    w.run_until_running()
    before = len(w.status_changes)
    w.advance(86400)
    p = w.step()
    assert (p.creates, p.deletes, p.annotations, p.events, p.requeue_after) == ((), (), None, (), None)
    assert len(w.status_changes) == before


def test_planning_twice_without_news_creates_nothing_more() -> None:
    w = World(group_obj([agent("a", replicas=2), agent("b")], [("a", "b")]), [PY])
    w.step()
    p = w.step()
    assert p.creates == ()
    assert p.deletes == ()


def test_a_sandbox_owned_by_someone_else_is_left_alone_and_reported() -> None:
    w = World(group_obj([agent("a")]), [PY])
    w.sandboxes["g-a-0"] = {
        "apiVersion": "agents.x-k8s.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": "g-a-0",
            "namespace": "team-a",
            "uid": "other",
            "ownerReferences": [{"kind": "AgentGroup", "name": "g", "uid": "old-uid", "controller": True}],
        },
        "spec": {},
    }
    p = w.step()
    assert p.creates == ()
    assert p.deletes == ()
    assert w.phase == "Pending"
    message = 'Sandbox "g-a-0" already exists and does not belong to this group; delete or rename it'
    assert message in w.agent("a")["message"]
    assert ("Warning", "SandboxConflict", message) in w.events
    del w.sandboxes["g-a-0"]  # the old owner's garbage is collected
    assert [c.body["metadata"]["name"] for c in w.step().creates] == ["g-a-0"]


def test_conditions_keep_their_transition_time_while_their_status_holds() -> None:
    w = two_agents()
    w.step()
    first = w.condition("Ready")["lastTransitionTime"]
    w.advance(30)
    w.mark_ready("g-planner-0")
    w.step()
    assert w.condition("Ready")["lastTransitionTime"] == first
    assert w.status_changes == [Change.TRANSITION, Change.PROGRESS]


# --- failure policies -------------------------------------------------------------------------------


def test_retry_sub_agent_recreates_a_lost_sandbox_and_reports_degraded_until_it_is_back() -> None:
    w = two_agents(policy="RetrySubAgent")
    w.run_until_running()
    w.lose("g-coder-0")
    p = w.step()
    assert [c.body["metadata"]["name"] for c in p.creates] == ["g-coder-0"]
    assert w.phase == "Running"
    degraded = w.condition("Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "AgentLost")
    assert w.condition("Ready")["status"] == "False"
    assert (
        "Normal",
        "SandboxRecreated",
        'Recreated Sandbox "g-coder-0" of agent coder (attempt 1 of 5)',
    ) in (w.events)
    assert "Degraded" in reasons(w)
    w.mark_ready("g-coder-0")
    w.step()
    assert w.phase == "Running"
    assert w.condition("Degraded")["status"] == "False"
    assert w.condition("Ready")["reason"] == "FleetReady"
    assert reasons(w)[-1] == "Recovered"


def test_retry_sub_agent_backs_off_exponentially_and_gives_up() -> None:
    config = PlanConfig(retry_limit=3, retry_base=timedelta(seconds=10))
    w = World(group_obj([agent("a")], policy="RetrySubAgent"), [PY], config=config)
    w.run_until_running()
    w.lose("g-a-0")
    assert len(w.step().creates) == 1  # the first recreation is immediate
    w.lose("g-a-0")
    p = w.step()
    assert p.creates == ()
    assert p.requeue_after == timedelta(seconds=10)
    w.advance(10)
    assert len(w.step().creates) == 1
    w.lose("g-a-0")
    w.advance(19)
    assert w.step().creates == ()
    w.advance(1)
    assert len(w.step().creates) == 1
    w.lose("g-a-0")
    w.advance(3600)
    p = w.step()
    assert w.phase == "Failed"
    assert w.condition("Ready")["message"].endswith("gave up after recreating g-a-0 3 times")
    assert p.creates == ()


def test_retry_counts_survive_a_restart_through_the_group_annotation() -> None:
    w = World(group_obj([agent("a")], policy="RetrySubAgent"), [PY])
    w.run_until_running()
    w.lose("g-a-0")
    p = w.step()
    assert p.annotations is not None
    w.lose("g-a-0")
    # A new controller process sees only the objects: the count comes from the annotation.
    assert w.step().requeue_after == timedelta(seconds=5)


def test_retry_sub_agent_replaces_a_sandbox_that_stays_unready() -> None:
    config = PlanConfig(unready_grace=timedelta(seconds=60))
    w = World(group_obj([agent("a")], policy="RetrySubAgent"), [PY], config=config)
    w.run_until_running()
    w.mark_ready("g-a-0", ready=False)
    p = w.step()
    assert p.deletes == ()
    assert p.requeue_after == timedelta(seconds=60)
    assert w.condition("Degraded")["status"] == "True"
    w.advance(60)
    p = w.step()
    assert [(d.name, d.uid) for d in p.deletes] == [("g-a-0", "uid-1")]
    assert p.deletes[0].event.reason == "SandboxReplaced"
    assert [c.body["metadata"]["name"] for c in w.step().creates] == ["g-a-0"]


def test_continue_degraded_stays_running_and_recreates_nothing() -> None:
    w = two_agents(policy="ContinueDegraded")
    w.run_until_running()
    w.lose("g-coder-0")
    p = w.step()
    assert p.creates == ()
    assert w.phase == "Running"
    assert w.condition("Degraded")["status"] == "True"
    assert w.condition("Degraded")["message"] == 'Sandbox "g-coder-0" of agent coder is gone'
    assert w.status["readyAgents"] == 1


# --- spec changes -------------------------------------------------------------------------------------


def test_an_added_agent_gets_its_sandbox() -> None:
    w = World(group_obj([agent("a")]), [PY])
    w.run_until_running()
    w.edit_spec(
        agents=[
            *w.group["spec"]["agents"],
            {"name": "b", "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}},
        ]
    )
    p = w.step()
    assert [c.body["metadata"]["name"] for c in p.creates] == ["g-b-0"]
    assert w.phase == "Initializing"
    assert w.status["observedGeneration"] == 2
    w.mark_ready()
    w.step()
    assert w.phase == "Running"
    assert w.status["totalAgents"] == 2


def test_a_removed_agent_loses_its_sandboxes() -> None:
    w = two_agents()
    w.run_until_running()
    w.edit_spec(agents=w.group["spec"]["agents"][:1])
    p = w.step()
    assert [(d.name, d.uid, d.event.reason) for d in p.deletes] == [("g-coder-0", "uid-2", "SandboxDeleted")]
    assert "agent coder is no longer in the spec" in p.deletes[0].event.message
    assert w.phase == "Running"
    assert w.status["totalAgents"] == 1


def test_replicas_scale_down_and_up() -> None:
    w = World(group_obj([agent("a", replicas=3)]), [PY])
    w.run_until_running()
    w.edit_spec(
        agents=[{"name": "a", "replicas": 1, "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}}]
    )
    p = w.step()
    assert sorted(d.name for d in p.deletes) == ["g-a-1", "g-a-2"]
    assert "agent a now has 1 replicas" in p.deletes[0].event.message
    w.edit_spec(
        agents=[{"name": "a", "replicas": 2, "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}}]
    )
    assert [c.body["metadata"]["name"] for c in w.step().creates] == ["g-a-1"]


def test_a_changed_runtime_ref_replaces_the_sandbox() -> None:
    w = World(group_obj([agent("a")]), [PY, code_interpreter("py2")])
    w.run_until_running()
    w.edit_spec(agents=[{"name": "a", "runtimeRef": {"kind": "CodeInterpreter", "name": "py2"}}])
    p = w.step()
    assert [(d.name, d.event.reason) for d in p.deletes] == [("g-a-0", "SandboxReplaced")]
    p = w.step()
    (create,) = p.creates
    assert create.body["metadata"]["annotations"]["runtime.agentcube.io/runtime-ref"] == "CodeInterpreter/py2"


# --- the startup deadline ----------------------------------------------------------------------------


def test_startup_past_its_deadline_fails() -> None:
    config = PlanConfig(startup_timeout=timedelta(minutes=5))
    w = World(group_obj([agent("a"), agent("b")], [("a", "b")]), [PY], config=config)
    assert w.step().requeue_after == timedelta(minutes=5)
    w.advance(120)
    assert w.step().requeue_after == timedelta(minutes=3)
    w.advance(180)
    p = w.step()
    assert w.phase == "Failed"
    ready = w.condition("Ready")
    assert ready["reason"] == "DeadlineExceeded"
    assert (
        ready["message"]
        == "not Running within 0:05:00 of starting: 0 of 2 Sandboxes Ready; waiting to start: b"
    )
    assert p.creates == ()
    assert p.requeue_after is None
    w.mark_ready()
    w.step()
    assert w.phase == "Failed"  # final for this generation


# --- recovery ----------------------------------------------------------------------------------------


def test_the_missing_runtime_appearing_starts_the_group() -> None:
    w = World(group_obj([agent("a", "late")]), [PY])
    w.step()
    assert w.phase == "Failed"
    w.runtimes[("CodeInterpreter", "late")] = code_interpreter("late")
    p = w.step()
    assert w.phase == "Initializing"
    assert [c.body["metadata"]["name"] for c in p.creates] == ["g-a-0"]
    assert reasons(w)[-2:] == ["Initializing", "SandboxCreated"]


def test_a_fixed_spec_starts_the_group() -> None:
    w = World(group_obj([agent("a")], topology="Peer"), [PY])
    w.step()
    assert w.condition("Ready")["reason"] == "UnsupportedTopology"
    assert "startTime" not in w.status
    w.edit_spec(topology="Hierarchical")
    w.run_until_running()
    assert w.status["observedGeneration"] == 2
