"""The controller as users meet it: `agentgroup controller` as its own process against the real
kube-apiserver (with kube-controller-manager's garbage collector), kubectl as the client, and the test
(or hack/sandbox-simulator) playing agent-sandbox by marking Sandboxes Ready.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentgroup.devcluster import REPO_ROOT, LocalControlPlane, free_port
from tests.e2e.kube import SANDBOXES, condition, get_json, kubectl, mark_sandbox_ready
from tests.e2e.processes import Process, wait

GROUP_LABEL = "runtime.agentcube.io/agent-group"
AGENT_LABEL = "runtime.agentcube.io/agent-name"

RUNTIMES = """\
apiVersion: runtime.agentcube.volcano.sh/v1alpha1
kind: CodeInterpreter
metadata: {name: py}
spec:
  template: {image: python:3.12, environment: [{name: MODE, value: e2e}]}
---
apiVersion: runtime.agentcube.volcano.sh/v1alpha1
kind: AgentRuntime
metadata: {name: planner-rt}
spec:
  podTemplate:
    labels: {app: planner}
    spec:
      containers: [{name: main, image: "agent:1"}]
"""


Starter = Callable[..., Process]


@pytest.fixture
def start_controller(cluster: LocalControlPlane, namespace: str, tmp_path: Path) -> Iterator[Starter]:
    """Start `agentgroup controller` processes watching the test's namespace; all stopped at the end."""
    started: list[Process] = []

    def start(*extra: str, name: str = "controller") -> Process:
        metrics_port, health_port = free_port(), free_port()
        args = [
            *(sys.executable, "-m", "agentgroup", "controller", "--kubeconfig", str(cluster.kubeconfig)),
            *("--namespace", namespace, "--leader-election-namespace", namespace),
            *("--metrics-bind-address", f"127.0.0.1:{metrics_port}"),
            *("--health-probe-bind-address", f"127.0.0.1:{health_port}", "--log-format", "text"),
            *extra,
        ]
        proc = Process.spawn(
            name, args, tmp_path / f"{name}.log", metrics_port=metrics_port, health_port=health_port
        )
        started.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)


@pytest.fixture
def simulator(cluster: LocalControlPlane, namespace: str, tmp_path: Path) -> Iterator[Process]:
    """hack/sandbox-simulator marking the namespace's new Sandboxes Ready a second after they appear."""
    args = [
        *(str(REPO_ROOT / "hack" / "sandbox-simulator"), "--kubeconfig", str(cluster.kubeconfig)),
        *("--namespace", namespace, "--ready-after", "1s"),
    ]
    proc = Process.spawn("sandbox-simulator", args, tmp_path / "simulator.log")
    yield proc
    proc.stop()


def apply(namespace: str, text: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=text, check=True)


def group_json(
    name: str, agents: list[tuple[str, str, str, int]], edges: list[tuple[str, str]], **spec: Any
) -> str:
    """An AgentGroup; each agent is (name, runtime kind, runtime name, replicas)."""
    doc = {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "AgentGroup",
        "metadata": {"name": name},
        "spec": {
            "agents": [
                {"name": a, "replicas": r, "runtimeRef": {"kind": k, "name": rt}} for a, k, rt, r in agents
            ],
            "dependencies": [{"from": f, "to": t} for f, t in edges],
            **spec,
        },
    }
    return json.dumps(doc)


RESEARCH = [("planner", "AgentRuntime", "planner-rt", 1), ("coder", "CodeInterpreter", "py", 2)]


def sandboxes(namespace: str) -> dict[str, dict[str, Any]]:
    r = kubectl("get", SANDBOXES, "-n", namespace, "-o", "json", check=True)
    return {s["metadata"]["name"]: s for s in json.loads(r.stdout)["items"]}


def group(namespace: str, name: str) -> dict[str, Any]:
    obj = get_json("agentgroups", name, namespace)
    assert obj is not None, f"AgentGroup {namespace}/{name} is gone"
    return obj


def phase(namespace: str, name: str) -> str:
    return str(group(namespace, name).get("status", {}).get("phase", ""))


def get_ag_row(namespace: str, name: str) -> list[str]:
    out = kubectl("get", "ag", name, "-n", namespace, "--no-headers", check=True).stdout
    return out.split()


def run_group(namespace: str, name: str, ctrl: Process) -> None:
    """Mark the group's Sandboxes Ready as they appear until the group is Running."""

    def step() -> bool:
        for sandbox_name, obj in sandboxes(namespace).items():
            if obj["metadata"]["labels"].get(GROUP_LABEL) == name and condition(obj, "Ready") is None:
                mark_sandbox_ready(sandbox_name, namespace)
        return phase(namespace, name) == "Running"

    wait(step, f"{name} to be Running", ctrl)


# --- the happy path ---------------------------------------------------------------------------------


def test_a_group_reaches_running_in_dependency_order(namespace: str, start_controller: Starter) -> None:
    apply(namespace, RUNTIMES)
    ctrl = start_controller()
    apply(namespace, group_json("research", RESEARCH, [("planner", "coder")]))

    wait(lambda: "research-planner-0" in sandboxes(namespace), "the planner's Sandbox", ctrl)
    wait(lambda: phase(namespace, "research") == "Initializing", "Initializing", ctrl)
    assert get_ag_row(namespace, "research")[:5] == ["research", "Hierarchical", "Initializing", "0", "3"]
    assert sorted(sandboxes(namespace)) == ["research-planner-0"]  # coder waits for the planner
    status = group(namespace, "research")["status"]
    assert status["agents"][1]["waitingFor"] == ["planner"]

    planner = sandboxes(namespace)["research-planner-0"]
    uid = group(namespace, "research")["metadata"]["uid"]
    assert planner["metadata"]["labels"] == {GROUP_LABEL: "research", AGENT_LABEL: "planner"}
    assert planner["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
            "kind": "AgentGroup",
            "name": "research",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert planner["spec"]["podTemplate"]["metadata"]["labels"]["app"] == "planner"

    mark_sandbox_ready("research-planner-0", namespace)
    wait(lambda: len(sandboxes(namespace)) == 3, "the coder's two Sandboxes", ctrl)
    coder = sandboxes(namespace)["research-coder-1"]
    (container,) = coder["spec"]["podTemplate"]["spec"]["containers"]
    assert container == {"name": "agent", "image": "python:3.12", "env": [{"name": "MODE", "value": "e2e"}]}

    mark_sandbox_ready("research-coder-0", namespace)
    mark_sandbox_ready("research-coder-1", namespace)
    wait(lambda: phase(namespace, "research") == "Running", "Running", ctrl)
    assert get_ag_row(namespace, "research")[:5] == ["research", "Hierarchical", "Running", "3", "3"]
    ready = condition(group(namespace, "research"), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "FleetReady")

    described = kubectl("describe", "ag", "research", "-n", namespace, check=True).stdout
    for line in ('Created Sandbox "research-planner-0" for agent planner', "all 3 Sandboxes are Ready"):
        assert line in described


def test_the_sandbox_api_version_can_be_forced(namespace: str, start_controller: Starter) -> None:
    apply(namespace, RUNTIMES)
    ctrl = start_controller("--sandbox-api-version", "v1alpha1")
    apply(namespace, group_json("solo", [("a", "CodeInterpreter", "py", 1)], []))
    wait(lambda: "solo-a-0" in sandboxes(namespace), "the Sandbox", ctrl)
    r = kubectl(
        "get",
        f"{SANDBOXES.split('.')[0]}.v1alpha1.agents.x-k8s.io",
        "solo-a-0",
        "-n",
        namespace,
        "-o",
        "json",
    )
    assert json.loads(r.stdout)["spec"]["replicas"] == 1


def test_an_invalid_group_is_failed_with_its_reason(namespace: str, start_controller: Starter) -> None:
    ctrl = start_controller()
    apply(namespace, group_json("lonely", [("a", "CodeInterpreter", "missing", 1)], []))
    wait(lambda: phase(namespace, "lonely") == "Failed", "Failed", ctrl)
    ready = condition(group(namespace, "lonely"), "Ready")
    assert ready is not None
    assert ready["reason"] == "RuntimeNotFound"
    assert 'CodeInterpreter "missing" does not exist' in ready["message"]
    assert sandboxes(namespace) == {}
    apply(namespace, RUNTIMES.replace("name: py", "name: missing"))  # the runtime appears: it starts
    wait(lambda: "lonely-a-0" in sandboxes(namespace), "the Sandbox once the runtime exists", ctrl)


# --- deletion and failure policies ------------------------------------------------------------------


def test_deleting_the_group_deletes_its_sandboxes(namespace: str, start_controller: Starter) -> None:
    apply(namespace, RUNTIMES)
    ctrl = start_controller()
    apply(namespace, group_json("research", RESEARCH, []))
    wait(lambda: len(sandboxes(namespace)) == 3, "three Sandboxes", ctrl)
    kubectl("delete", "ag", "research", "-n", namespace, check=True)
    wait(lambda: sandboxes(namespace) == {}, "the garbage collector to delete the Sandboxes", ctrl)


@pytest.mark.parametrize("policy", ["FailFast", "RetrySubAgent", "ContinueDegraded"])
def test_deleting_a_sandbox_of_a_running_group_follows_its_failure_policy(
    namespace: str, start_controller: Starter, policy: str
) -> None:
    apply(namespace, RUNTIMES)
    ctrl = start_controller()
    apply(namespace, group_json("research", RESEARCH, [("planner", "coder")], failurePolicy=policy))
    run_group(namespace, "research", ctrl)
    lost_uid = sandboxes(namespace)["research-coder-1"]["metadata"]["uid"]
    kubectl("delete", SANDBOXES, "research-coder-1", "-n", namespace, check=True)

    if policy == "FailFast":
        wait(lambda: phase(namespace, "research") == "Failed", "Failed", ctrl)
        ready = condition(group(namespace, "research"), "Ready")
        assert ready is not None
        assert (ready["reason"], ready["message"]) == (
            "AgentLost",
            'Sandbox "research-coder-1" of agent coder is gone',
        )
        assert "research-coder-1" not in sandboxes(namespace)
    elif policy == "RetrySubAgent":
        wait(
            lambda: (
                sandboxes(namespace).get("research-coder-1", {}).get("metadata", {}).get("uid")
                not in (None, lost_uid)
            ),
            "the lost Sandbox to be recreated",
            ctrl,
        )
        degraded = condition(group(namespace, "research"), "Degraded")
        assert degraded is not None
        assert (degraded["status"], degraded["reason"]) == ("True", "AgentLost")
        assert phase(namespace, "research") == "Running"
        mark_sandbox_ready("research-coder-1", namespace)
        wait(
            lambda: (condition(group(namespace, "research"), "Degraded") or {}).get("status") == "False",
            "recovery",
            ctrl,
        )
        described = kubectl("describe", "ag", "research", "-n", namespace, check=True).stdout
        assert 'Recreated Sandbox "research-coder-1" of agent coder (attempt 1 of 5)' in described
    else:
        wait(
            lambda: (condition(group(namespace, "research"), "Degraded") or {}).get("status") == "True",
            "Degraded",
            ctrl,
        )
        assert phase(namespace, "research") == "Running"
        assert group(namespace, "research")["status"]["readyAgents"] == 2
        assert "research-coder-1" not in sandboxes(namespace)


# --- crashes and replicas ---------------------------------------------------------------------------


def test_sigkill_while_creating_50_groups_then_restart_leaves_no_duplicate(
    namespace: str, start_controller: Starter, simulator: Process
) -> None:
    apply(namespace, RUNTIMES)
    chain = [
        ("a", "CodeInterpreter", "py", 1),
        ("b", "CodeInterpreter", "py", 2),
        ("c", "AgentRuntime", "planner-rt", 1),
    ]
    edges = [("a", "b"), ("b", "c")]
    first = start_controller(name="controller-1")
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input="\n---\n".join(group_json(f"g{i:02d}", chain, edges) for i in range(50)),
        check=True,
    )
    # Every group's first agent starts at once; the others wait a second per agent for readiness.
    wait(lambda: len(sandboxes(namespace)) >= 50, "the first controller to be midway", first, simulator)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert len(sandboxes(namespace)) < 200

    second = start_controller(name="controller-2")
    wait(
        lambda: all(phase(namespace, f"g{i:02d}") == "Running" for i in range(50)),
        "every group to be Running",
        second,
        simulator,
        timeout=180,
    )
    found = sandboxes(namespace)
    assert len(found) == 200
    per_agent = Counter(
        (s["metadata"]["labels"][GROUP_LABEL], s["metadata"]["labels"][AGENT_LABEL]) for s in found.values()
    )
    assert per_agent == Counter({(f"g{i:02d}", a): r for i in range(50) for a, _, _, r in chain})


def test_two_replicas_elect_one_leader_and_the_other_takes_over(
    namespace: str, start_controller: Starter
) -> None:
    apply(namespace, RUNTIMES)
    fast = (
        "--leader-elect-lease-duration",
        "4s",
        "--leader-elect-renew-deadline",
        "3s",
        "--leader-elect-retry-period",
        "500ms",
    )
    one = start_controller(*fast, name="replica-1")
    two = start_controller(*fast, name="replica-2")

    def leaders() -> list[Process]:
        return [p for p in (one, two) if p.metric("leader_election_master_status") == 1.0]

    wait(lambda: len(leaders()) == 1, "exactly one leader", one, two)
    (leader,) = leaders()
    standby = two if leader is one else one
    assert standby.metric("leader_election_master_status") == 0.0
    lease = get_json("leases", "agentgroup-controller", namespace)
    assert lease is not None
    apply(namespace, group_json("before", RESEARCH, []))
    wait(lambda: len(sandboxes(namespace)) == 3, "the leader to work", leader)

    leader.stop(signal.SIGKILL)
    wait(lambda: standby.metric("leader_election_master_status") == 1.0, "the standby to take over", standby)
    apply(namespace, group_json("after", RESEARCH, []))
    wait(lambda: len(sandboxes(namespace)) == 6, "the new leader to work", standby)
    holder = (get_json("leases", "agentgroup-controller", namespace) or {})["spec"]["holderIdentity"]
    assert holder != lease["spec"]["holderIdentity"]


def test_sigterm_hands_the_lease_over_at_once(namespace: str, start_controller: Starter) -> None:
    slow = ("--leader-elect-lease-duration", "60s", "--leader-elect-retry-period", "500ms")
    one = start_controller(*slow, name="replica-1")
    wait(lambda: one.metric("leader_election_master_status") == 1.0, "the first replica to lead", one)
    two = start_controller(*slow, name="replica-2")
    assert one.stop(signal.SIGTERM) == 0
    # A 60 s lease that was released: the standby takes it at its next try, not after a minute.
    wait(lambda: two.metric("leader_election_master_status") == 1.0, "the handover", two, timeout=15)
