"""Platform policy (API.md section 6): each limit, namespace selection, and deny / warn / dryrun."""

from __future__ import annotations

from typing import Any

import pytest

from shared.findings import Reason
from shared.models import AgentGroup
from shared.policy import AgentGroupPolicy, LabelSelector, evaluate
from shared.rules import validate, validate_group
from tests.core.strategies import group


def policy(name: str = "limits", **spec: Any) -> AgentGroupPolicy:
    return AgentGroupPolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def research(**spec: Any) -> dict[str, Any]:
    obj = group(["planner", "coder", "reviewer"], [("planner", "coder"), ("coder", "reviewer")], **spec)
    obj["spec"]["agents"][1]["replicas"] = 4
    obj["spec"]["agents"][1]["runtimeRef"]["kind"] = "CodeInterpreter"
    obj["metadata"]["labels"] = {"team": "research", "cost-center": "42"}
    return obj


def findings(pol: AgentGroupPolicy, obj: dict[str, Any]) -> list[tuple[str, str]]:
    out = evaluate(pol, AgentGroup.model_validate(obj))
    assert all(f.reason == Reason.POLICY_VIOLATION for f in out)
    return [(f.field, f.message) for f in out]


LIMITS = [
    ({"maxAgents": 3}, []),
    ({"maxAgents": 2}, [("spec.agents", 'policy "limits" allows at most 2 agents, got 3')]),
    ({"maxAgents": 1}, [("spec.agents", 'policy "limits" allows at most 1 agent, got 3')]),
    ({"maxSandboxes": 6}, []),
    (
        {"maxSandboxes": 5},
        [("spec.agents", 'policy "limits" allows at most 5 Sandboxes (the sum of replicas), got 6')],
    ),
    ({"maxReplicasPerAgent": 4}, []),
    (
        {"maxReplicasPerAgent": 3},
        [
            (
                "spec.agents[1].replicas",
                'policy "limits" allows at most 3 replicas per agent, got 4 for "coder"',
            )
        ],
    ),
    (
        {"maxReplicasPerAgent": 1},
        [("spec.agents[1].replicas", 'policy "limits" allows at most 1 replica per agent, got 4')],
    ),
    ({"allowedRuntimeKinds": ["AgentRuntime", "CodeInterpreter"]}, []),
    (
        {"allowedRuntimeKinds": ["AgentRuntime"]},
        [
            (
                "spec.agents[1].runtimeRef.kind",
                'policy "limits" allows runtime kinds AgentRuntime, got CodeInterpreter',
            )
        ],
    ),
    (
        {"allowedRuntimeKinds": []},
        [(f"spec.agents[{i}].runtimeRef.kind", "(none)") for i in range(3)],
    ),
    ({"allowedTopologies": ["Hierarchical"]}, []),
    (
        {"allowedTopologies": ["Peer"]},
        [("spec.topology", 'policy "limits" allows topologies Peer, got Hierarchical')],
    ),
    ({"requiredLabels": [{"key": "team"}]}, []),
    ({"requiredLabels": [{"key": "team", "allowedValues": ["research", "infra"]}]}, []),
    (
        {"requiredLabels": [{"key": "owner"}]},
        [("metadata.labels", 'policy "limits" requires the label "owner" on every AgentGroup')],
    ),
    (
        {"requiredLabels": [{"key": "team", "allowedValues": ["infra", "web"]}]},
        [("metadata.labels", 'policy "limits" allows "team" to be one of infra, web, got "research"')],
    ),
]


@pytest.mark.parametrize(("spec", "expected"), LIMITS)
def test_each_limit(spec: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    got = findings(policy(**spec), research())

    assert [field for field, _ in got] == [field for field, _ in expected]
    for (_, message), (_, words) in zip(got, expected, strict=True):
        assert words in message


def test_all_broken_limits_are_reported_together() -> None:
    pol = policy(maxAgents=1, maxSandboxes=1, maxReplicasPerAgent=1, requiredLabels=[{"key": "owner"}])

    assert [field for field, _ in findings(pol, research())] == [
        "spec.agents",
        "spec.agents",
        "spec.agents[1].replicas",
        "metadata.labels",
    ]


def test_a_policy_without_limits_allows_everything() -> None:
    assert findings(policy(), research(topology="Peer")) == []


LABELS = {"env": "prod", "team": "research", "kubernetes.io/metadata.name": "team-a"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),
        ({"matchLabels": {"env": "prod"}}, True),
        ({"matchLabels": {"env": "prod", "team": "research"}}, True),
        ({"matchLabels": {"env": "dev"}}, False),
        ({"matchLabels": {"tier": "prod"}}, False),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}]}, False),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["prod"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [
                    {"key": "team", "operator": "Exists"},
                    {"key": "tier", "operator": "DoesNotExist"},
                ],
            },
            True,
        ),
        (
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [{"key": "team", "operator": "In", "values": ["infra"]}],
            },
            False,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "Gt", "values": ["1"]}]}, False),
    ],
)
def test_namespace_selector_has_kubernetes_label_selector_semantics(
    selector: dict[str, Any], matches: bool
) -> None:
    assert LabelSelector.model_validate(selector).matches(LABELS) is matches
    assert policy(namespaceSelector=selector).selects(LABELS) is matches


def test_deny_warn_and_dryrun_route_findings() -> None:
    over = {"maxReplicasPerAgent": 2}
    verdict = validate(
        research(),
        policies=[
            policy("denies", enforcementAction="deny", **over),
            policy("warns", enforcementAction="warn", **over),
            policy("counts", enforcementAction="dryrun", **over),
        ],
    )

    assert ['policy "denies"' in v.message for v in verdict.violations] == [True]
    assert ['policy "warns"' in w.message for w in verdict.warnings] == [True]
    assert ['policy "counts"' in d.message for d in verdict.dryrun] == [True]
    assert (verdict.status_code, verdict.status_reason) == (403, "Forbidden")


def test_deny_is_the_default_action_and_spec_violations_win_the_status_code() -> None:
    obj = research(topology="Peer")

    verdict = validate(obj, policies=[policy(maxAgents=1)])

    assert [v.reason for v in verdict.violations] == [Reason.UNSUPPORTED_TOPOLOGY, Reason.POLICY_VIOLATION]
    assert verdict.status_code == 422


def test_warn_and_dryrun_never_deny() -> None:
    pols = [policy(enforcementAction=action, maxAgents=1) for action in ("warn", "dryrun")]

    assert validate(research(), policies=pols).allowed


def test_only_policies_selecting_the_namespace_apply() -> None:
    parsed = AgentGroup.model_validate(research())
    prod_only = policy(maxAgents=1, namespaceSelector={"matchLabels": {"env": "prod"}})

    assert validate_group(parsed, policies=[prod_only], namespace_labels={"env": "dev"}).allowed
    assert not validate_group(parsed, policies=[prod_only], namespace_labels={"env": "prod"}).allowed


def test_without_namespace_labels_only_the_name_label_is_known() -> None:
    parsed = AgentGroup.model_validate(research())  # namespace team-a
    by_name = policy(
        maxAgents=1, namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "team-a"}}
    )
    by_other_name = policy(
        maxAgents=1, namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "team-b"}}
    )
    by_env = policy(maxAgents=1, namespaceSelector={"matchLabels": {"env": "prod"}})

    assert not validate_group(parsed, policies=[by_name]).allowed
    assert validate_group(parsed, policies=[by_other_name]).allowed
    assert validate_group(parsed, policies=[by_env]).allowed
