"""The real control plane and the AgentGroup CRD, seen through kubectl (no webhook, no controller of ours).

These prove that the e2e fixture gives a working API server and controller manager, and that the CRD
alone already shows users our columns, our docs and our reason codes.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from agentgroup.devcluster import REPO_ROOT, LocalControlPlane
from tests.e2e.kube import condition, get_json, kubectl, mark_sandbox_ready, wait_for_condition, wait_gone

CRD = "agentgroups.runtime.agentcube.volcano.sh"

VALID_GROUP = textwrap.dedent(
    """\
    apiVersion: runtime.agentcube.volcano.sh/v1alpha1
    kind: AgentGroup
    metadata:
      name: research-task
    spec:
      agents:
      - name: planner
        role: planner
        runtimeRef: {kind: AgentRuntime, name: planner-rt}
      - name: coder
        replicas: 2
        runtimeRef: {kind: CodeInterpreter, name: py-interp}
      dependencies:
      - {from: planner, to: coder}
    """
)


def group_yaml(name: str, agents: list[str], edges: list[tuple[str, str]]) -> str:
    doc = {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "AgentGroup",
        "metadata": {"name": name},
        "spec": {
            "agents": [{"name": a, "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}} for a in agents],
            "dependencies": [{"from": f, "to": t} for f, t in edges],
        },
    }
    return json.dumps(doc)  # JSON is YAML, and kubectl reads both


def test_crd_is_installed_and_established(cluster: LocalControlPlane) -> None:
    r = kubectl("get", "crd", CRD, "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}')
    assert r.code == 0, r
    assert r.stdout == "True"

    r = kubectl("api-resources", "--api-group=runtime.agentcube.volcano.sh", "--no-headers")
    assert r.code == 0, r
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()}
    assert rows["agentgroups"] == [
        "agentgroups",
        "ag",
        "runtime.agentcube.volcano.sh/v1alpha1",
        "true",
        "AgentGroup",
    ]


def test_apply_valid_group_and_get_shows_printer_columns(namespace: str) -> None:
    r = kubectl("apply", "-n", namespace, "-f", "-", input=VALID_GROUP)
    assert r.code == 0, r
    assert r.stdout.strip() == "agentgroup.runtime.agentcube.volcano.sh/research-task created"

    # The schema's defaults are applied by the API server.
    group = get_json("agentgroup", "research-task", namespace)
    assert group is not None
    assert group["spec"]["topology"] == "Hierarchical"
    assert group["spec"]["failurePolicy"] == "FailFast"
    assert [a.get("replicas") for a in group["spec"]["agents"]] == [1, 2]

    # Without a controller the status columns are empty ...
    r = kubectl("get", "ag", "-n", namespace)
    assert r.code == 0, r
    header, row = r.stdout.splitlines()
    assert header.split() == ["NAME", "TOPOLOGY", "PHASE", "READY", "TOTAL", "AGE"]
    assert row.split()[:2] == ["research-task", "Hierarchical"]

    # ... and show what the status subresource says once it is written.
    status = {"status": {"phase": "Initializing", "readyAgents": 1, "totalAgents": 3}}
    r = kubectl(
        "patch", "ag", "research-task", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    assert r.code == 0, r
    r = kubectl("get", "agentgroups", "research-task", "-n", namespace, "--no-headers")
    assert r.code == 0, r
    assert r.stdout.split()[:5] == ["research-task", "Hierarchical", "Initializing", "1", "3"]


def test_explain_dependencies_shows_our_descriptions(cluster: LocalControlPlane) -> None:
    r = kubectl("explain", "agentgroup.spec.dependencies")
    assert r.code == 0, r
    out = " ".join(r.stdout.split())  # kubectl wraps long lines
    assert "GROUP: runtime.agentcube.volcano.sh" in out
    assert "KIND: AgentGroup" in out
    assert "FIELD: dependencies <[]Object>" in out
    assert "Directed edges between agents" in out
    assert "from <string> -required-" in out
    assert "The agent that must be Ready first" in out
    assert "to <string> -required-" in out
    assert "waits until `from` is Ready" in out

    # Every field has a description: kubectl explain never says "<empty>" for ours.
    r = kubectl("explain", "agentgroups", "--recursive")
    assert r.code == 0, r
    for field in ("spec.agents.runtimeRef.kind", "spec.failurePolicy", "status.agents.waitingFor"):
        r = kubectl("explain", f"agentgroups.{field}")
        assert r.code == 0, r
        assert "DESCRIPTION:" in r.stdout
        assert "<empty>" not in r.stdout, r


def test_crd_rejects_self_dependency_without_a_webhook(namespace: str) -> None:
    r = kubectl("get", "validatingwebhookconfigurations", "-o", "name")
    assert r.code == 0, r
    assert r.stdout == "", "this test proves the CRD's own rules: no webhook may be registered"

    r = kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=group_yaml("loop", ["a", "b"], [("a", "b"), ("b", "b")]),
    )  # fmt: skip
    assert r.code == 1, r
    want = 'spec.dependencies[1]: Invalid value: SelfDependency: agent "b" cannot depend on itself'
    assert r.stderr.strip() == f'The AgentGroup "loop" is invalid: {want}'
    assert get_json("agentgroup", "loop", namespace) is None

    # The same vocabulary for the other rule the CRD checks with CEL, and all violations at once.
    r = kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=group_yaml("twins", ["a", "a"], [("a", "a")]),
    )  # fmt: skip
    assert r.code == 1, r
    assert "spec.agents: Invalid value" in r.stderr
    assert "DuplicateAgentName: agent names must be unique within the group" in r.stderr
    assert "SelfDependency" in r.stderr

    # --dry-run=server goes through the same validation and creates nothing.
    r = kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input=group_yaml("loop", ["a"], [("a", "a")]),
    )  # fmt: skip
    assert r.code == 1, r
    assert "SelfDependency" in r.stderr


@pytest.mark.parametrize(
    "reason",
    ["NoAgents", "InvalidAgentName", "DuplicateAgentName", "InvalidReplicas", "InvalidRuntimeKind"],
)
def test_crd_rules_name_their_reason_code_without_a_webhook(namespace: str, reason: str) -> None:
    r = kubectl("apply", "-n", namespace, "-f", str(REPO_ROOT / "examples" / "bad" / f"{reason}.yaml"))
    assert r.code == 1, r
    assert "is invalid" in r.stderr, r
    assert f"{reason}: " in r.stderr, r


def test_garbage_collector_deletes_objects_owned_by_a_deleted_group(namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=VALID_GROUP, check=True)
    group = get_json("agentgroup", "research-task", namespace)
    assert group is not None
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned-by-research-task",
            "ownerReferences": [
                {
                    "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
                    "kind": "AgentGroup",
                    "name": "research-task",
                    "uid": group["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "data": {"note": "deleted by the garbage collector with its group"},
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(owned), check=True)
    kubectl("create", "configmap", "unowned", "-n", namespace, check=True)

    r = kubectl("delete", "agentgroup", "research-task", "-n", namespace)
    assert r.code == 0, r
    assert 'agentgroup.runtime.agentcube.volcano.sh "research-task" deleted' in r.stdout

    wait_gone("configmap", "owned-by-research-task", namespace, timeout=90)
    assert get_json("configmap", "unowned", namespace) is not None


RUNTIMES = textwrap.dedent(
    """\
    apiVersion: runtime.agentcube.volcano.sh/v1alpha1
    kind: CodeInterpreter
    metadata: {name: py-interp}
    spec:
      template:
        image: python:3.12-slim
        environment: [{name: MODE, value: test}]
        resources: {limits: {cpu: "1"}}
      warmPoolSize: 0
    ---
    apiVersion: runtime.agentcube.volcano.sh/v1alpha1
    kind: AgentRuntime
    metadata: {name: planner-rt}
    spec:
      targetPort: [{port: 8080}]
      podTemplate:
        labels: {app: planner}
        spec: {containers: [{name: planner, image: planner:1}]}
    ---
    apiVersion: agents.x-k8s.io/v1alpha1
    kind: Sandbox
    metadata: {name: research-task-planner-0}
    spec:
      podTemplate:
        metadata: {labels: {app: planner}}
        spec: {containers: [{name: planner, image: planner:1}]}
    """
)


def test_upstream_test_crds_and_marking_a_sandbox_ready(namespace: str) -> None:
    r = kubectl("apply", "-n", namespace, "-f", "-", input=RUNTIMES)
    assert r.code == 0, r
    interp = get_json("codeinterpreter", "py-interp", namespace)
    assert interp is not None
    # Upstream defaults and field names survive the schema (nothing is pruned).
    assert interp["spec"]["sessionTimeout"] == "15m"
    assert interp["spec"]["maxSessionDuration"] == "8h"
    assert interp["spec"]["template"]["environment"] == [{"name": "MODE", "value": "test"}]

    sandbox = get_json("sandbox", "research-task-planner-0", namespace)
    assert condition(sandbox, "Ready") is None  # nothing makes a Sandbox Ready in a test cluster ...

    mark_sandbox_ready("research-task-planner-0", namespace)  # ... until a test does, as agent-sandbox would
    r = kubectl(
        "wait", "--for=condition=Ready", "sandbox/research-task-planner-0", "-n", namespace, "--timeout=30s"
    )
    assert r.code == 0, r
    ready = wait_for_condition(
        "sandboxes.agents.x-k8s.io", "research-task-planner-0", namespace, reason="DependenciesReady"
    )
    # Both served versions see the same object.
    r = kubectl(
        "get", "sandboxes.v1beta1.agents.x-k8s.io", "research-task-planner-0", "-n", namespace,
        "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
    )  # fmt: skip
    assert (r.code, r.stdout) == (0, "True"), r

    mark_sandbox_ready("research-task-planner-0", namespace, ready=False)
    not_ready = wait_for_condition(
        "sandboxes.agents.x-k8s.io", "research-task-planner-0", namespace, status="False"
    )
    assert condition(not_ready, "Ready") != condition(ready, "Ready")
