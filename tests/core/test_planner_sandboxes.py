"""The Sandboxes and SandboxClaims the planner asks for: their bodies in both API versions, durations,
and the warm path."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.planner import PlanConfig
from shared.sandboxes import parse_duration
from tests.controller.objects import World, agent, agent_runtime, code_interpreter, group_obj, ready_condition


def only_body(world: World) -> dict[str, Any]:
    (create,) = world.step().creates
    return create.body


def test_code_interpreter_becomes_one_container_named_agent() -> None:
    ci = code_interpreter(
        "py",
        imagePullPolicy="IfNotPresent",
        imagePullSecrets=[{"name": "regcred"}],
        environment=[{"name": "MODE", "value": "fast"}],
        command=["python"],
        args=["-m", "agent"],
        resources={"limits": {"cpu": "1"}},
        runtimeClassName="kata",
        labels={"team": "ml"},
        annotations={"note": "x"},
    )
    body = only_body(World(group_obj([agent("coder")]), [ci]))
    assert body["apiVersion"] == "agents.x-k8s.io/v1alpha1"
    assert body["kind"] == "Sandbox"
    assert body["metadata"]["labels"] == {
        "runtime.agentcube.io/agent-group": "g",
        "runtime.agentcube.io/agent-name": "coder",
    }
    assert body["spec"]["replicas"] == 1
    assert body["spec"]["shutdownTime"] == "2030-01-01T20:00:00Z"  # now + maxSessionDuration 8h
    assert body["spec"]["podTemplate"] == {
        "metadata": {
            "labels": {
                "team": "ml",
                "runtime.agentcube.io/agent-group": "g",
                "runtime.agentcube.io/agent-name": "coder",
            },
            "annotations": {"note": "x"},
        },
        "spec": {
            "containers": [
                {
                    "name": "agent",
                    "image": "python:3.12",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python"],
                    "args": ["-m", "agent"],
                    "env": [{"name": "MODE", "value": "fast"}],
                    "resources": {"limits": {"cpu": "1"}},
                }
            ],
            "imagePullSecrets": [{"name": "regcred"}],
            "runtimeClassName": "kata",
        },
    }


def test_agent_runtime_pod_spec_is_copied() -> None:
    pod = {"containers": [{"name": "main", "image": "agent:1"}], "serviceAccountName": "sa"}
    rt = agent_runtime("rt", pod, labels={"app": "planner"})
    body = only_body(World(group_obj([agent("planner", "rt", kind="AgentRuntime")]), [rt]))
    assert body["spec"]["podTemplate"]["spec"] == pod
    assert body["spec"]["podTemplate"]["metadata"]["labels"]["app"] == "planner"
    assert body["spec"]["shutdownTime"] == "2030-01-01T13:00:00Z"


def test_v1beta1_sandboxes_use_operating_mode() -> None:
    w = World(group_obj([agent("a")]), [code_interpreter()], config=PlanConfig(sandbox_api="v1beta1"))
    body = only_body(w)
    assert body["apiVersion"] == "agents.x-k8s.io/v1beta1"
    assert body["spec"]["operatingMode"] == "Running"
    assert "replicas" not in body["spec"]


def test_a_long_group_name_gets_a_valid_label_and_sandbox_name() -> None:
    long = "g" * 70
    body = only_body(World(group_obj([agent("a")], name=long), [code_interpreter()]))
    assert len(body["metadata"]["name"]) <= 63
    assert len(body["metadata"]["labels"]["runtime.agentcube.io/agent-group"]) <= 63


def test_an_unreadable_session_duration_is_reported_and_left_out() -> None:
    w = World(group_obj([agent("a")]), [code_interpreter(max_session="forever")])
    body = only_body(w)
    assert "shutdownTime" not in body["spec"]
    assert 'maxSessionDuration ignored: "forever" is not a duration' in w.agent("a")["message"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8h", timedelta(hours=8)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5s", timedelta(seconds=1.5)),
        ("300ms", timedelta(milliseconds=300)),
        ("0", timedelta(0)),
        ("-2m", timedelta(minutes=-2)),
    ],
)
def test_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "8", "h", "1d", "1h 30m", "abc"])
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


# --- the warm path -----------------------------------------------------------------------------------


def test_a_warm_code_interpreter_gets_a_claim_ready_when_its_sandbox_is() -> None:
    w = World(group_obj([agent("a", "warm")]), [code_interpreter("warm", warm=2)])
    body = only_body(w)
    assert body["apiVersion"] == "extensions.agents.x-k8s.io/v1alpha1"
    assert body["kind"] == "SandboxClaim"
    assert body["spec"] == {"sandboxTemplateRef": {"name": "warm"}}
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-group"
    # agent-sandbox gives the claim a Sandbox from the pool and reports it on the claim.
    w.claims["g-a-0"]["status"] = {"sandbox": {"name": "warm-pool-x1"}}
    w.sandboxes["warm-pool-x1"] = {
        "apiVersion": "agents.x-k8s.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": "warm-pool-x1", "namespace": "team-a", "uid": "pool-sb"},
        "status": {"conditions": [ready_condition(True, w.now)]},
    }
    w.step()
    assert w.phase == "Running"
    assert w.agent("a")["sandboxNames"] == ["warm-pool-x1"]


def test_v1beta1_claims_name_the_warm_pool() -> None:
    config = PlanConfig(sandbox_api="v1beta1", claim_api="v1beta1")
    body = only_body(
        World(group_obj([agent("a", "warm")]), [code_interpreter("warm", warm=1)], config=config)
    )
    assert body["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"
    assert body["spec"] == {"warmPoolRef": {"name": "warm"}}


def test_without_the_claim_api_a_warm_agent_gets_a_cold_sandbox() -> None:
    w = World(
        group_obj([agent("a", "warm")]), [code_interpreter("warm", warm=1)], config=PlanConfig(claim_api=None)
    )
    assert only_body(w)["kind"] == "Sandbox"
