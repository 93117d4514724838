"""The admission rules of API.md section 3: one implementation for the webhook, controller and CLI.

``validate`` takes the raw object (so a malformed one still gets every problem named) plus the
existing runtimes and the policies as plain data, and returns a :class:`Verdict` with ALL violations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any

from pydantic import ValidationError

from shared.findings import Finding, Reason, Verdict
from shared.graph import find_cycle
from shared.models import (
    API_VERSION,
    KIND,
    RUNTIME_KINDS,
    AgentGroup,
    FailurePolicy,
    Topology,
)
from shared.naming import MAX_LABEL, is_dns1123_label
from shared.policy import NAMESPACE_NAME_LABEL, AgentGroupPolicy, EnforcementAction, evaluate
from shared.views import GroupView

RuntimeKey = tuple[str, str]
"""(kind, name) of a CodeInterpreter or AgentRuntime in the group's namespace."""


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _plain(pydantic_message: str) -> str:
    """Pydantic's wording in the API's terms (lists and mappings, not tuples and dictionaries)."""
    return (
        pydantic_message.replace("Input should be", "must be")
        .replace("a valid tuple", "a list")
        .replace("a valid dictionary", "a mapping")
    )


# A malformed field that one of the rules owns keeps that rule's reason code.
_SHAPE_REASONS = {"replicas": Reason.INVALID_REPLICAS, "runtimeRef": Reason.INVALID_RUNTIME_KIND}


def parse(obj: Any) -> tuple[AgentGroup | None, list[Finding]]:
    """The typed group, or None and one finding per shape error (wrong kind, wrong types)."""
    if not isinstance(obj, Mapping):
        return None, [Finding("", Reason.INVALID_SPEC, "the object must be a mapping (a YAML/JSON object)")]
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind != KIND or api_version != API_VERSION:
        got = f"{api_version or '(no apiVersion)'} {kind or '(no kind)'}"
        msg = f"expected apiVersion {API_VERSION}, kind {KIND}; got {got}"
        return None, [Finding("kind", Reason.INVALID_SPEC, msg)]
    try:
        return AgentGroup.model_validate(obj), []
    except ValidationError as err:
        findings = []
        for e in err.errors(include_url=False):
            loc = e["loc"]
            reason = next((_SHAPE_REASONS[p] for p in loc if p in _SHAPE_REASONS), Reason.INVALID_SPEC)
            got = e.get("input")
            msg = _plain(e["msg"])
            detail = msg if isinstance(got, (Mapping, list)) else f"{msg}, got {got!r}"
            findings.append(Finding(_path(loc), reason, detail))
        return None, findings


_NAME_HINT = (
    f"use at most {MAX_LABEL} lower-case letters, digits and '-', starting and ending with a letter or digit"
)


def _agent_findings(group: GroupView, out: list[Finding]) -> None:
    agents = group.spec.agents
    if not agents:
        out.append(
            Finding("spec.agents", Reason.NO_AGENTS, "a group needs at least one agent in spec.agents")
        )
    first_index: dict[str, int] = {}
    for i, agent in enumerate(agents):
        name = agent.name
        if not is_dns1123_label(name):
            out.append(
                Finding(
                    f"spec.agents[{i}].name",
                    Reason.INVALID_AGENT_NAME,
                    f'"{name}" is not a DNS-1123 label: {_NAME_HINT}',
                )
            )
        if name in first_index:
            out.append(
                Finding(
                    f"spec.agents[{i}].name",
                    Reason.DUPLICATE_AGENT_NAME,
                    f'"{name}" is already the name of spec.agents[{first_index[name]}]; '
                    "agent names must be unique",
                )
            )
        else:
            first_index[name] = i
        if agent.replicas < 1:
            out.append(
                Finding(
                    f"spec.agents[{i}].replicas",
                    Reason.INVALID_REPLICAS,
                    f"replicas must be at least 1, got {agent.replicas}",
                )
            )
        ref = agent.runtime_ref
        if ref.kind not in RUNTIME_KINDS:
            out.append(
                Finding(
                    f"spec.agents[{i}].runtimeRef",
                    Reason.INVALID_RUNTIME_KIND,
                    f'kind "{ref.kind}" is not supported; use {" or ".join(RUNTIME_KINDS)}',
                )
            )
        if not ref.name:
            out.append(
                Finding(
                    f"spec.agents[{i}].runtimeRef",
                    Reason.INVALID_RUNTIME_KIND,
                    "runtimeRef.name is empty; name the CodeInterpreter or AgentRuntime this agent runs",
                )
            )


def _graph_findings(group: GroupView, violations: list[Finding], warnings: list[Finding]) -> None:
    succ: dict[str, list[str]] = {a.name: [] for a in group.spec.agents}
    seen: dict[tuple[str, str], int] = {}
    for j, dep in enumerate(group.spec.dependencies):
        a, b = dep.from_, dep.to
        usable = True
        if a not in succ:
            usable = False
            violations.append(
                Finding(
                    f"spec.dependencies[{j}].from",
                    Reason.UNKNOWN_AGENT,
                    f'"{a}" is not an agent of this group',
                )
            )
        if b not in succ:
            usable = False
            violations.append(
                Finding(
                    f"spec.dependencies[{j}].to", Reason.UNKNOWN_AGENT, f'"{b}" is not an agent of this group'
                )
            )
        if a == b and usable:
            usable = False
            violations.append(
                Finding(
                    f"spec.dependencies[{j}]",
                    Reason.SELF_DEPENDENCY,
                    f'"{b}" depends on itself; remove this edge',
                )
            )
        edge = (a, b)
        if edge in seen:
            warnings.append(
                Finding(
                    f"spec.dependencies[{j}]",
                    Reason.DUPLICATE_DEPENDENCY,
                    f"the edge {a} -> {b} repeats spec.dependencies[{seen[edge]}]; remove the duplicate",
                )
            )
        elif usable:
            seen[edge] = j
            succ[a].append(b)
    cycle = find_cycle(succ)
    if cycle:
        violations.append(
            Finding(
                "spec.dependencies",
                Reason.DEPENDENCY_CYCLE,
                f"the dependencies contain the cycle {' -> '.join(cycle)}; remove one of these edges",
            )
        )


_FAILURE_POLICIES = tuple(p.value for p in FailurePolicy)


def _spec_findings(group: GroupView, out: list[Finding]) -> None:
    spec = group.spec
    if spec.topology != Topology.HIERARCHICAL:
        what = "is reserved and not implemented yet" if spec.topology == Topology.PEER else "is not supported"
        out.append(
            Finding(
                "spec.topology",
                Reason.UNSUPPORTED_TOPOLOGY,
                f'topology "{spec.topology}" {what}; use {Topology.HIERARCHICAL.value}',
            )
        )
    if spec.failure_policy not in _FAILURE_POLICIES:
        out.append(
            Finding(
                "spec.failurePolicy",
                Reason.INVALID_SPEC,
                f'failurePolicy "{spec.failure_policy}" is not one of {", ".join(_FAILURE_POLICIES)}',
            )
        )


def missing_runtimes(group: GroupView, runtimes: Set[RuntimeKey]) -> list[Finding]:
    """RuntimeNotFound for every agent whose (well-formed) runtimeRef is not in ``runtimes``."""
    out = []
    ns = group.metadata.namespace or "default"
    for i, agent in enumerate(group.spec.agents):
        ref = agent.runtime_ref
        if ref.kind in RUNTIME_KINDS and ref.name and (ref.kind, ref.name) not in runtimes:
            out.append(
                Finding(
                    f"spec.agents[{i}].runtimeRef",
                    Reason.RUNTIME_NOT_FOUND,
                    f'{ref.kind} "{ref.name}" does not exist in namespace "{ns}"; '
                    "create it first or fix runtimeRef",
                )
            )
    return out


def validate_group(
    group: GroupView,
    *,
    runtimes: Set[RuntimeKey] | None = None,
    policies: Sequence[AgentGroupPolicy] = (),
    namespace_labels: Mapping[str, str] | None = None,
) -> Verdict:
    """Every rule against a typed group. ``runtimes=None`` skips the RuntimeNotFound check.

    ``policies`` are those that exist; each is applied when its namespaceSelector matches
    ``namespace_labels`` (None: only the label Kubernetes puts on every namespace is known).
    """
    violations: list[Finding] = []
    warnings: list[Finding] = []
    _agent_findings(group, violations)
    _spec_findings(group, violations)
    _graph_findings(group, violations, warnings)
    if runtimes is not None:
        violations += missing_runtimes(group, runtimes)
    dryrun: list[Finding] = []
    ns = group.metadata.namespace or "default"
    labels = namespace_labels if namespace_labels is not None else {NAMESPACE_NAME_LABEL: ns}
    for policy in policies:
        if not policy.selects(labels):
            continue
        found = evaluate(policy, group)
        {
            EnforcementAction.DENY: violations,
            EnforcementAction.WARN: warnings,
            EnforcementAction.DRYRUN: dryrun,
        }[policy.action].extend(found)
    return Verdict(tuple(violations), tuple(warnings), tuple(dryrun))


def validate(
    obj: Any,
    *,
    runtimes: Set[RuntimeKey] | None = None,
    policies: Sequence[AgentGroupPolicy] = (),
    namespace_labels: Mapping[str, str] | None = None,
) -> Verdict:
    """Parse then validate a raw AgentGroup object (a dict as read from YAML/JSON or the API)."""
    group, shape = parse(obj)
    if group is None:
        return Verdict(tuple(shape))
    return validate_group(group, runtimes=runtimes, policies=policies, namespace_labels=namespace_labels)
