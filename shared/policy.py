"""Platform policy: the cluster-scoped ``AgentGroupPolicy`` and its pure evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import Field

from shared.findings import Finding, Reason
from shared.models import KubeModel, ObjectMeta
from shared.views import GroupView

POLICY_KIND = "AgentGroupPolicy"
POLICY_PLURAL = "agentgrouppolicies"
# Kubernetes sets this label on every namespace; offline tools use it as the only label they know.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class EnforcementAction(StrEnum):
    DENY = "deny"
    WARN = "warn"
    DRYRUN = "dryrun"


class LabelSelectorRequirement(KubeModel):
    key: str
    operator: str
    values: tuple[str, ...] = ()


class LabelSelector(KubeModel):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field((), alias="matchExpressions")

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes label-selector semantics; an empty selector matches everything."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            ok = {
                "In": present and labels.get(req.key) in req.values,
                "NotIn": not present or labels.get(req.key) not in req.values,
                "Exists": present,
                "DoesNotExist": not present,
            }.get(req.operator, False)
            if not ok:
                return False
        return True


class RequiredLabel(KubeModel):
    key: str
    allowed_values: tuple[str, ...] = Field((), alias="allowedValues")


class AgentGroupPolicySpec(KubeModel):
    enforcement_action: EnforcementAction = Field(EnforcementAction.DENY, alias="enforcementAction")
    namespace_selector: LabelSelector = Field(default_factory=LabelSelector, alias="namespaceSelector")
    max_agents: int | None = Field(None, alias="maxAgents")
    max_sandboxes: int | None = Field(None, alias="maxSandboxes")
    max_replicas_per_agent: int | None = Field(None, alias="maxReplicasPerAgent")
    allowed_runtime_kinds: tuple[str, ...] | None = Field(None, alias="allowedRuntimeKinds")
    allowed_topologies: tuple[str, ...] | None = Field(None, alias="allowedTopologies")
    required_labels: tuple[RequiredLabel, ...] = Field((), alias="requiredLabels")


class AgentGroupPolicy(KubeModel):
    kind: str = POLICY_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AgentGroupPolicySpec = Field(default_factory=AgentGroupPolicySpec)

    @property
    def action(self) -> EnforcementAction:
        return self.spec.enforcement_action

    def selects(self, namespace_labels: Mapping[str, str]) -> bool:
        return self.spec.namespace_selector.matches(namespace_labels)


def _plural(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


def evaluate(policy: AgentGroupPolicy, group: GroupView) -> list[Finding]:
    """Every way ``group`` breaks ``policy``; each message names the policy and the limit."""
    spec, lim = group.spec, policy.spec
    name = f'policy "{policy.metadata.name}"'
    out: list[Finding] = []

    def add(field: str, message: str) -> None:
        out.append(Finding(field, Reason.POLICY_VIOLATION, f"{name} {message}"))

    agents = spec.agents
    if lim.max_agents is not None and len(agents) > lim.max_agents:
        add("spec.agents", f"allows at most {_plural(lim.max_agents, 'agent')}, got {len(agents)}")
    if lim.max_sandboxes is not None and (total := sum(a.replicas for a in agents)) > lim.max_sandboxes:
        add(
            "spec.agents",
            f"allows at most {_plural(lim.max_sandboxes, 'Sandbox', 'Sandboxes')} (the sum of replicas), "
            f"got {total}",
        )
    # One loop per limit that is set: a request pays only for the limits a platform team chose.
    if (most := lim.max_replicas_per_agent) is not None:
        for i, agent in enumerate(agents):
            if agent.replicas > most:
                add(
                    f"spec.agents[{i}].replicas",
                    f"allows at most {_plural(most, 'replica')} per agent, "
                    f'got {agent.replicas} for "{agent.name}"',
                )
    if (kinds := lim.allowed_runtime_kinds) is not None:
        for i, agent in enumerate(agents):
            if (kind := agent.runtime_ref.kind) not in kinds:
                add(
                    f"spec.agents[{i}].runtimeRef.kind",
                    f"allows runtime kinds {', '.join(kinds) or '(none)'}, got {kind}",
                )
    if lim.allowed_topologies is not None and spec.topology not in lim.allowed_topologies:
        add(
            "spec.topology",
            f"allows topologies {', '.join(lim.allowed_topologies) or '(none)'}, got {spec.topology}",
        )
    labels = group.metadata.labels
    for req in lim.required_labels:
        if req.key not in labels:
            add("metadata.labels", f'requires the label "{req.key}" on every AgentGroup')
        elif req.allowed_values and labels[req.key] not in req.allowed_values:
            allowed = ", ".join(req.allowed_values)
            add("metadata.labels", f'allows "{req.key}" to be one of {allowed}, got "{labels[req.key]}"')
    return out
