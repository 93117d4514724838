"""The admission rules of API.md section 3: every reason code, its field and its message."""

from __future__ import annotations

from typing import Any

import pytest

from shared.findings import Finding, Reason
from shared.rules import parse, validate, validate_group
from tests.core.strategies import group

RUNTIMES = {("AgentRuntime", "rt"), ("CodeInterpreter", "py")}


def with_agents(*agents: dict[str, Any], edges: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    obj = group([], edges)
    obj["spec"]["agents"] = list(agents)
    return obj


def agent(name: str, kind: str = "AgentRuntime", runtime: str = "rt", **extra: Any) -> dict[str, Any]:
    return {"name": name, "runtimeRef": {"kind": kind, "name": runtime}, **extra}


# (case, object, field, reason, words the message must contain)
CASES: list[tuple[str, dict[str, Any], str, Reason, tuple[str, ...]]] = [
    ("no agents", group([]), "spec.agents", Reason.NO_AGENTS, ("at least one agent",)),
    (
        "agents missing",
        {**group([]), "spec": {}},
        "spec.agents",
        Reason.NO_AGENTS,
        ("at least one agent",),
    ),
    (
        "upper case name",
        group(["Planner"]),
        "spec.agents[0].name",
        Reason.INVALID_AGENT_NAME,
        ('"Planner"', "DNS-1123 label", "lower-case"),
    ),
    (
        "name of 64 characters",
        group(["a" * 64]),
        "spec.agents[0].name",
        Reason.INVALID_AGENT_NAME,
        ("at most 63",),
    ),
    ("empty name", group([""]), "spec.agents[0].name", Reason.INVALID_AGENT_NAME, ('""',)),
    (
        "name ends with a dash",
        group(["ok", "coder-"]),
        "spec.agents[1].name",
        Reason.INVALID_AGENT_NAME,
        ('"coder-"', "ending with a letter or digit"),
    ),
    (
        "duplicate name",
        group(["a", "b", "a"]),
        "spec.agents[2].name",
        Reason.DUPLICATE_AGENT_NAME,
        ('"a" is already the name of spec.agents[0]', "unique"),
    ),
    (
        "zero replicas",
        with_agents(agent("a", replicas=0)),
        "spec.agents[0].replicas",
        Reason.INVALID_REPLICAS,
        ("at least 1, got 0",),
    ),
    (
        "negative replicas",
        with_agents(agent("a"), agent("b", replicas=-3)),
        "spec.agents[1].replicas",
        Reason.INVALID_REPLICAS,
        ("got -3",),
    ),
    (
        "replicas not a number",
        with_agents(agent("a", replicas="two")),
        "spec.agents[0].replicas",
        Reason.INVALID_REPLICAS,
        ("integer", "'two'"),
    ),
    (
        "unsupported runtime kind",
        with_agents(agent("a", kind="Deployment")),
        "spec.agents[0].runtimeRef",
        Reason.INVALID_RUNTIME_KIND,
        ('"Deployment"', "CodeInterpreter or AgentRuntime"),
    ),
    (
        "empty runtime kind",
        with_agents({"name": "a", "runtimeRef": {"name": "rt"}}),
        "spec.agents[0].runtimeRef",
        Reason.INVALID_RUNTIME_KIND,
        ('kind ""',),
    ),
    (
        "empty runtime name",
        with_agents(agent("a", runtime="")),
        "spec.agents[0].runtimeRef",
        Reason.INVALID_RUNTIME_KIND,
        ("runtimeRef.name is empty",),
    ),
    (
        "runtimeRef not a mapping",
        with_agents({"name": "a", "runtimeRef": "rt"}),
        "spec.agents[0].runtimeRef",
        Reason.INVALID_RUNTIME_KIND,
        ("must be",),
    ),
    (
        "unknown target",
        group(["a", "b"], [("a", "b"), ("b", "ghost")]),
        "spec.dependencies[1].to",
        Reason.UNKNOWN_AGENT,
        ('"ghost" is not an agent of this group',),
    ),
    (
        "unknown source",
        group(["a"], [("nobody", "a")]),
        "spec.dependencies[0].from",
        Reason.UNKNOWN_AGENT,
        ('"nobody"',),
    ),
    (
        "self dependency",
        group(["a", "b"], [("a", "b"), ("b", "b")]),
        "spec.dependencies[1]",
        Reason.SELF_DEPENDENCY,
        ('"b" depends on itself', "remove this edge"),
    ),
    (
        "two-node cycle",
        group(["a", "b"], [("a", "b"), ("b", "a")]),
        "spec.dependencies",
        Reason.DEPENDENCY_CYCLE,
        ("a -> b -> a",),
    ),
    (
        "cycle behind a chain",
        group(["p", "a", "b", "c"], [("p", "a"), ("a", "b"), ("b", "c"), ("c", "a")]),
        "spec.dependencies",
        Reason.DEPENDENCY_CYCLE,
        ("a -> b -> c -> a", "remove one of these edges"),
    ),
    (
        "peer topology",
        group(["a"], topology="Peer"),
        "spec.topology",
        Reason.UNSUPPORTED_TOPOLOGY,
        ('"Peer" is reserved and not implemented yet', "Hierarchical"),
    ),
    (
        "unknown topology",
        group(["a"], topology="Mesh"),
        "spec.topology",
        Reason.UNSUPPORTED_TOPOLOGY,
        ('"Mesh" is not supported',),
    ),
    (
        "missing runtime",
        with_agents(agent("a"), agent("b", kind="CodeInterpreter", runtime="r-interp")),
        "spec.agents[1].runtimeRef",
        Reason.RUNTIME_NOT_FOUND,
        ('CodeInterpreter "r-interp" does not exist in namespace "team-a"', "create it first"),
    ),
    (
        "runtime of the other kind",
        with_agents(agent("a", kind="CodeInterpreter", runtime="rt")),
        "spec.agents[0].runtimeRef",
        Reason.RUNTIME_NOT_FOUND,
        ('CodeInterpreter "rt"',),
    ),
    (
        "unknown failure policy",
        group(["a"], failurePolicy="Retry"),
        "spec.failurePolicy",
        Reason.INVALID_SPEC,
        ('"Retry" is not one of FailFast, RetrySubAgent, ContinueDegraded',),
    ),
    (
        "agents not a list",
        {**group([]), "spec": {"agents": "planner"}},
        "spec.agents",
        Reason.INVALID_SPEC,
        ("must be a list",),
    ),
]


@pytest.mark.parametrize(
    ("obj", "field", "reason", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_rule_reports_its_reason_field_and_message(
    obj: dict[str, Any], field: str, reason: Reason, words: tuple[str, ...]
) -> None:
    verdict = validate(obj, runtimes=RUNTIMES)

    assert not verdict.allowed
    assert [(v.field, v.reason) for v in verdict.violations] == [(field, reason)]
    for word in words:
        assert word in verdict.violations[0].message
    assert str(verdict.violations[0]).startswith(f"{field}: {reason}: ")


def test_a_valid_group_is_allowed_without_findings() -> None:
    obj = with_agents(
        agent("planner"),
        agent("coder", kind="CodeInterpreter", runtime="py", replicas=3),
        agent("reviewer"),
        edges=[("planner", "coder"), ("coder", "reviewer"), ("planner", "reviewer")],
    )
    obj["spec"] |= {"topology": "Hierarchical", "failurePolicy": "ContinueDegraded"}

    verdict = validate(obj, runtimes=RUNTIMES)

    assert verdict.allowed
    assert verdict.violations == verdict.warnings == verdict.dryrun == ()
    assert verdict.status_code == 200


def test_every_violation_is_reported_at_once_in_spec_order() -> None:
    obj = with_agents(
        agent("a"),
        agent("B_", replicas=0),
        agent("a", kind="Pod", runtime=""),
        agent("c", runtime="missing"),
        edges=[("a", "ghost"), ("c", "c"), ("a", "c"), ("c", "a")],
    )
    obj["spec"]["topology"] = "Peer"

    verdict = validate(obj, runtimes=RUNTIMES)

    assert [str(v).split(": ")[0:2] for v in verdict.violations] == [
        ["spec.agents[1].name", "InvalidAgentName"],
        ["spec.agents[1].replicas", "InvalidReplicas"],
        ["spec.agents[2].name", "DuplicateAgentName"],
        ["spec.agents[2].runtimeRef", "InvalidRuntimeKind"],
        ["spec.agents[2].runtimeRef", "InvalidRuntimeKind"],
        ["spec.topology", "UnsupportedTopology"],
        ["spec.dependencies[0].to", "UnknownAgent"],
        ["spec.dependencies[1]", "SelfDependency"],
        ["spec.dependencies", "DependencyCycle"],
        ["spec.agents[3].runtimeRef", "RuntimeNotFound"],
    ]
    assert verdict.message.splitlines() == [str(v) for v in verdict.violations]
    assert (verdict.status_code, verdict.status_reason) == (422, "Invalid")


def test_a_repeated_edge_is_a_warning_and_still_allowed() -> None:
    verdict = validate(group(["a", "b"], [("a", "b"), ("a", "b")]), runtimes=RUNTIMES)

    assert verdict.allowed
    assert verdict.warnings == (
        Finding(
            "spec.dependencies[1]",
            Reason.DUPLICATE_DEPENDENCY,
            "the edge a -> b repeats spec.dependencies[0]; remove the duplicate",
        ),
    )


def test_unknown_ends_and_self_edges_never_count_as_cycles_or_duplicates() -> None:
    verdict = validate(group(["a"], [("a", "x"), ("a", "x"), ("a", "a"), ("a", "a")]))

    assert [v.reason for v in verdict.violations] == [
        Reason.UNKNOWN_AGENT,
        Reason.UNKNOWN_AGENT,
        Reason.SELF_DEPENDENCY,
        Reason.SELF_DEPENDENCY,
    ]
    assert verdict.warnings == ()


def test_runtimes_none_skips_the_runtime_check_and_an_empty_set_denies() -> None:
    obj = group(["a"])

    assert validate(obj).allowed
    assert [v.reason for v in validate(obj, runtimes=set()).violations] == [Reason.RUNTIME_NOT_FOUND]


def test_a_group_without_namespace_is_looked_up_in_default() -> None:
    obj = group(["a"])
    del obj["metadata"]["namespace"]

    (finding,) = validate(obj, runtimes=set()).violations

    assert 'in namespace "default"' in finding.message


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "the object must be a mapping"),
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "got v1 ConfigMap"),
        ({"kind": "AgentGroup"}, "got (no apiVersion) AgentGroup"),
        ({"apiVersion": "runtime.agentcube.volcano.sh/v1beta1", "kind": "AgentGroup"}, "v1beta1"),
    ],
)
def test_an_object_that_is_no_agentgroup_is_invalid_spec(obj: Any, message: str) -> None:
    group_, findings = parse(obj)

    assert group_ is None
    assert [f.reason for f in findings] == [Reason.INVALID_SPEC]
    assert message in findings[0].message
    assert not validate(obj).allowed


def test_shape_errors_are_all_reported_with_paths() -> None:
    obj = with_agents({"name": 7, "runtimeRef": {"kind": "AgentRuntime", "name": "rt"}}, agent("b"))
    obj["spec"]["dependencies"] = [{"from": "a", "to": ["b"]}]

    findings = validate(obj).violations

    assert [(f.field, f.reason) for f in findings] == [
        ("spec.agents[0].name", Reason.INVALID_SPEC),
        ("spec.dependencies[0].to", Reason.INVALID_SPEC),
    ]
    assert "must be a valid string, got 7" in findings[0].message


def test_validate_group_takes_the_parsed_group() -> None:
    parsed, _ = parse(group(["a", "b"], [("b", "a"), ("a", "b")]))
    assert parsed is not None

    verdict = validate_group(parsed)

    assert [v.message for v in verdict.violations] == [
        "the dependencies contain the cycle a -> b -> a; remove one of these edges"
    ]
