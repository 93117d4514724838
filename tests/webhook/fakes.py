"""Fakes and builders for webhook tests: a Cluster of plain data, AdmissionReviews, example objects."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from shared.models import RUNTIME_KINDS
from shared.policy import AgentGroupPolicy
from shared.rules import RuntimeKey
from webhook.admission import RuntimeLookup

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMESPACE = "team-a"
API_VERSION = "runtime.agentcube.volcano.sh/v1alpha1"


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def example_runtimes() -> set[RuntimeKey]:
    """(kind, name) of the runtimes in examples/good/01-runtimes.yaml."""
    docs = load_yaml(EXAMPLES / "good" / "01-runtimes.yaml")
    return {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in RUNTIME_KINDS}


def example_policy(**spec: Any) -> AgentGroupPolicy:
    """The policy of examples/bad/PolicyViolation.policy.yaml, with ``spec`` fields replaced."""
    [doc] = load_yaml(EXAMPLES / "bad" / "PolicyViolation.policy.yaml")
    return AgentGroupPolicy.model_validate({**doc, "spec": {**doc["spec"], **spec}})


def in_namespace(obj: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
    """``obj`` as the API server hands it to admission: with ``metadata.namespace`` set."""
    return {**obj, "metadata": {**obj.get("metadata", {}), "namespace": namespace}}


def group(*agents: tuple[str, str, str], deps: Sequence[tuple[str, str]] = (), **spec: Any) -> dict[str, Any]:
    """An AgentGroup in NAMESPACE; each agent is (name, runtime kind, runtime name)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentGroup",
        "metadata": {"name": "g", "namespace": NAMESPACE},
        "spec": {
            "agents": [{"name": n, "runtimeRef": {"kind": k, "name": r}} for n, k, r in agents],
            "dependencies": [{"from": a, "to": b} for a, b in deps],
            **spec,
        },
    }


def big_group(n: int) -> dict[str, Any]:
    """A valid chain of ``n`` agents on the example runtimes."""
    agents = [(f"agent-{i}", "AgentRuntime", "planner-rt") for i in range(n)]
    return group(*agents, deps=[(f"agent-{i}", f"agent-{i + 1}") for i in range(n - 1)])


def review(
    obj: Any,
    *,
    operation: str = "CREATE",
    old: Any = None,
    sub_resource: str | None = None,
    dry_run: bool = False,
    api_version: str = "admission.k8s.io/v1",
    uid: str | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as the kube-apiserver sends it for an AgentGroup."""
    meta = (obj or old or {}).get("metadata", {})
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": "runtime.agentcube.volcano.sh", "version": "v1alpha1", "kind": "AgentGroup"},
        "resource": {
            "group": "runtime.agentcube.volcano.sh",
            "version": "v1alpha1",
            "resource": "agentgroups",
        },
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", NAMESPACE),
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


class FakeCluster:
    """A :class:`webhook.admission.Cluster` of plain data that records the runtime lookups it gets."""

    def __init__(
        self,
        runtimes: Iterable[RuntimeKey] = (),
        *,
        policies: Sequence[AgentGroupPolicy] = (),
        labels: dict[str, Mapping[str, str]] | None = None,
        namespace: str = NAMESPACE,
    ) -> None:
        self.existing: dict[str, set[RuntimeKey]] = {namespace: set(runtimes)}
        self.installed_policies = policies
        self.labels = labels or {}
        self.failing: dict[RuntimeKey, str] = {}
        self.lookups: list[tuple[str, frozenset[RuntimeKey]]] = []

    async def runtimes(self, namespace: str, refs: Collection[RuntimeKey]) -> RuntimeLookup:
        self.lookups.append((namespace, frozenset(refs)))
        here = self.existing.get(namespace, set())
        failed = {r: self.failing[r] for r in refs if r in self.failing}
        return RuntimeLookup(frozenset(r for r in refs if r in here and r not in failed), failed)

    def policies(self) -> Sequence[AgentGroupPolicy]:
        return self.installed_policies

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self.labels.get(namespace)
