"""The policy audit: existing AgentGroups against the current policies, as pure data.

The controller's leader runs it on an interval and on policy changes and writes each policy's status;
keeping the evaluation here means the audit and admission can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.models import AgentGroup
from shared.policy import NAMESPACE_NAME_LABEL, AgentGroupPolicy, evaluate

MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class GroupViolation:
    namespace: str
    name: str
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class AuditResult:
    total: int
    listed: tuple[GroupViolation, ...]

    def status(self, timestamp: str, observed_generation: int | None = None) -> dict[str, Any]:
        """The policy's ``status`` as the CRD defines it; ``observed_generation`` is the policy's
        ``metadata.generation`` the audit evaluated (left out when None)."""
        generation = {} if observed_generation is None else {"observedGeneration": observed_generation}
        return {
            "auditTimestamp": timestamp,
            **generation,
            "totalViolations": self.total,
            "violations": [
                {"namespace": v.namespace, "name": v.name, "field": v.field, "message": v.message}
                for v in self.listed
            ],
        }


def audit(
    policies: Iterable[AgentGroupPolicy],
    groups: Iterable[AgentGroup],
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> dict[str, AuditResult]:
    """Per policy name: every violation among ``groups`` in namespaces the policy selects.

    ``namespace_labels`` maps a namespace name to its labels; an unknown namespace is taken to carry
    only the label Kubernetes sets on every namespace. Groups are visited in (namespace, name) order
    so the listed violations are stable between audits and a status write happens only on change.
    """
    ordered = sorted(groups, key=lambda g: (g.metadata.namespace, g.metadata.name))
    results: dict[str, AuditResult] = {}
    for policy in policies:
        total = 0
        listed: list[GroupViolation] = []
        for group in ordered:
            ns = group.metadata.namespace
            labels = namespace_labels.get(ns, {NAMESPACE_NAME_LABEL: ns})
            if not policy.selects(labels):
                continue
            for finding in evaluate(policy, group):
                total += 1
                if len(listed) < MAX_LISTED:
                    listed.append(GroupViolation(ns, group.metadata.name, finding.field, finding.message))
        results[policy.metadata.name] = AuditResult(total, tuple(listed))
    return results
