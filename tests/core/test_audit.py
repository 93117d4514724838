"""The policy audit as pure data: existing groups against the current policies, per policy name."""

from __future__ import annotations

from typing import Any

from shared.audit import MAX_LISTED, AuditResult, GroupViolation, audit
from shared.models import AgentGroup
from shared.policy import AgentGroupPolicy
from tests.core.strategies import group

TEAM_A = {"kubernetes.io/metadata.name": "team-a", "tier": "standard"}
TEAM_B = {"kubernetes.io/metadata.name": "team-b"}
LABELS = {"team-a": TEAM_A, "team-b": TEAM_B}


def policy(name: str = "limits", **spec: Any) -> AgentGroupPolicy:
    return AgentGroupPolicy.model_validate({"metadata": {"name": name, "generation": 3}, "spec": spec})


def agents(n: int, name: str, namespace: str = "team-a", **labels: str) -> AgentGroup:
    obj = group([f"a{i}" for i in range(n)])
    obj["metadata"] = {"name": name, "namespace": namespace, "labels": labels}
    return AgentGroup.model_validate(obj)


def listed(result: AuditResult) -> list[tuple[str, str, str]]:
    return [(v.namespace, v.name, v.field) for v in result.listed]


def test_each_policy_lists_the_groups_that_break_it() -> None:
    groups = [agents(3, "big"), agents(1, "small"), agents(2, "medium", team="x")]
    pols = [policy("max-two", maxAgents=2), policy("team-label", requiredLabels=[{"key": "team"}])]

    results = audit(pols, groups, LABELS)

    assert listed(results["max-two"]) == [("team-a", "big", "spec.agents")]
    assert results["max-two"].total == 1
    assert listed(results["team-label"]) == [
        ("team-a", "big", "metadata.labels"),
        ("team-a", "small", "metadata.labels"),
    ]
    assert results["max-two"].listed[0].message == 'policy "max-two" allows at most 2 agents, got 3'


def test_a_policy_nothing_breaks_has_an_empty_result() -> None:
    assert audit([policy(maxAgents=10)], [agents(3, "big")], LABELS) == {"limits": AuditResult(0, ())}


def test_only_groups_in_selected_namespaces_count() -> None:
    groups = [agents(3, "big", "team-a"), agents(3, "big", "team-b")]
    standard = policy(maxAgents=1, namespaceSelector={"matchLabels": {"tier": "standard"}})
    not_standard = policy(
        "others",
        maxAgents=1,
        namespaceSelector={"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
    )

    results = audit([standard, not_standard], groups, LABELS)

    assert listed(results["limits"]) == [("team-a", "big", "spec.agents")]
    assert listed(results["others"]) == [("team-b", "big", "spec.agents")]


def test_a_namespace_without_known_labels_carries_only_its_name_label() -> None:
    by_name = policy(maxAgents=1, namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "x"}})
    by_tier = policy("tier", maxAgents=1, namespaceSelector={"matchLabels": {"tier": "standard"}})

    results = audit([by_name, by_tier], [agents(2, "g", "x")], {})

    assert results["limits"].total == 1
    assert results["tier"].total == 0


def test_every_action_is_audited() -> None:
    pols = [policy(action, enforcementAction=action, maxAgents=1) for action in ("deny", "warn", "dryrun")]

    results = audit(pols, [agents(2, "g")], LABELS)

    assert {name: r.total for name, r in results.items()} == {"deny": 1, "warn": 1, "dryrun": 1}


def test_every_finding_counts_and_the_first_twenty_are_listed_in_namespace_name_order() -> None:
    # Each group breaks two limits; given out of order, across two namespaces.
    groups = [agents(3, f"g{i:02d}", ns) for i in reversed(range(15)) for ns in ("team-b", "team-a")]
    pol = policy(maxAgents=2, maxSandboxes=2)

    result = audit([pol], groups, LABELS)["limits"]

    assert result.total == 60
    assert len(result.listed) == MAX_LISTED == 20
    keys = [(v.namespace, v.name) for v in result.listed]
    assert keys == sorted(keys)
    assert keys[:4] == [("team-a", "g00"), ("team-a", "g00"), ("team-a", "g01"), ("team-a", "g01")]


def test_the_audit_is_stable_whatever_the_order_of_its_input() -> None:
    groups = [agents(3, name, ns) for name in ("c", "a", "b") for ns in ("team-b", "team-a")]
    pol = policy(maxAgents=1)

    assert audit([pol], groups, LABELS) == audit([pol], list(reversed(groups)), LABELS)


def test_the_status_has_the_crd_s_shape() -> None:
    result = AuditResult(42, (GroupViolation("team-a", "big", "spec.agents", "too many"),))

    assert result.status("2030-01-01T12:00:00Z", 3) == {
        "auditTimestamp": "2030-01-01T12:00:00Z",
        "observedGeneration": 3,
        "totalViolations": 42,
        "violations": [{"namespace": "team-a", "name": "big", "field": "spec.agents", "message": "too many"}],
    }
    assert "observedGeneration" not in AuditResult(0, ()).status("2030-01-01T12:00:00Z")
