"""The AgentGroup CRD is a well-formed, structural, documented v1 CRD that agrees with the domain core,
and its schema accepts the examples we ship.

Schemas are checked with a small walker of the OpenAPI v3 subset CRDs use (types, enums, required,
bounds, lengths, patterns, unknown fields). CEL rules are only checked for presence and reason codes
here; the real API server evaluates them in tests/e2e.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.audit import AuditResult, GroupViolation
from shared.findings import Reason
from shared.models import GROUP, KIND, PLURAL, RUNTIME_KINDS, FailurePolicy, Topology
from shared.naming import DNS1123_LABEL, MAX_LABEL

ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = ROOT / "deploy/helm/agentgroup/crds/agentgroups.yaml"
SCHEMAS = {
    # kind -> the CRD that serves it (ours, or the test copies of agentcube's)
    KIND: CRD_PATH,
    "AgentGroupPolicy": ROOT / "deploy/helm/agentgroup/crds/agentgrouppolicies.yaml",
    "CodeInterpreter": ROOT / "hack/crds/codeinterpreters.yaml",
    "AgentRuntime": ROOT / "hack/crds/agentruntimes.yaml",
}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": Mapping,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}

_CHECKS: dict[str, Callable[[Any, Any], bool]] = {
    "enum": lambda v, lim: v in lim,
    "minimum": lambda v, lim: v >= lim,
    "maximum": lambda v, lim: v <= lim,
    "minLength": lambda v, lim: len(v) >= lim,
    "maxLength": lambda v, lim: len(v) <= lim,
    "pattern": lambda v, lim: re.search(lim, v) is not None,
    "minItems": lambda v, lim: len(v) >= lim,
    "maxItems": lambda v, lim: len(v) <= lim,
}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return dict(only)


def schema_of(kind: str) -> dict[str, Any]:
    return dict(version(load(SCHEMAS[kind]))["schema"]["openAPIV3Schema"])


def schema_errors(schema: Mapping[str, Any], value: Any, at: str = "") -> list[str]:
    """Where ``value`` breaks ``schema``, one message per problem (empty: it fits)."""
    kind = schema.get("type")
    if kind and (not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind != "boolean")):
        return [f"{at}: must be {kind}, got {value!r}"]
    out = [
        f"{at}: {value!r} breaks {key}: {schema[key]!r}"
        for key, ok in _CHECKS.items()
        if key in schema and not ok(value, schema[key])
    ]
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += schema_errors(schema["items"], item, f"{at}[{i}]")
    if isinstance(value, Mapping):
        out += [f"{at}.{key}: required" for key in schema.get("required", ()) if key not in value]
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            if at == "" and key == "metadata":
                continue  # the API server validates ObjectMeta itself
            if key in props:
                out += schema_errors(props[key], item, f"{at}.{key}" if at else key)
            elif isinstance(extra, Mapping):
                out += schema_errors(extra, item, f"{at}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.append(f"{at}.{key}: unknown field")
    return out


def nodes(schema: Mapping[str, Any], at: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node below ``schema`` with its path, e.g. ``spec.agents[].name``."""
    for key, child in schema.get("properties", {}).items():
        path = f"{at}.{key}" if at else key
        yield path, child
        yield from nodes(child, path)
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), Mapping):
            yield f"{at}{suffix}", schema[key]
            yield from nodes(schema[key], f"{at}{suffix}")


def docs(*paths: Path) -> list[dict[str, Any]]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


SCHEMA = schema_of(KIND)
SPEC = SCHEMA["properties"]["spec"]["properties"]
AGENT = SPEC["agents"]["items"]["properties"]


# --- the CRD object --------------------------------------------------------------------------------


def test_a_v1_crd_for_namespaced_agentgroups_with_short_name_ag() -> None:
    crd = load(CRD_PATH)

    assert (crd["apiVersion"], crd["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert (crd["spec"]["group"], crd["spec"]["scope"]) == (GROUP, "Namespaced")
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (KIND, PLURAL, "agentgroup")
    assert "ag" in names["shortNames"]
    v = version(crd)
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}


def test_printer_columns_show_topology_phase_ready_total_and_age() -> None:
    columns = [(c["name"], c["jsonPath"]) for c in version(load(CRD_PATH))["additionalPrinterColumns"]]

    assert columns == [
        ("Topology", ".spec.topology"),
        ("Phase", ".status.phase"),
        ("Ready", ".status.readyAgents"),
        ("Total", ".status.totalAgents"),
        ("Age", ".metadata.creationTimestamp"),
    ]


# --- the schema ------------------------------------------------------------------------------------


def test_the_schema_is_structural_and_every_field_is_described() -> None:
    assert SCHEMA["type"] == "object"
    for path, node in nodes(SCHEMA):
        assert "type" in node, f"{path} has no type"
        described = not path.endswith(("[]", "{}")) or node["type"] == "object"  # fields and objects
        if described and path != "metadata":
            assert node.get("description", "").strip(), f"{path} has no description (kubectl explain)"
        if node["type"] == "array":
            assert "items" in node, f"{path} has no items schema"


def test_defaults_and_enums_agree_with_the_domain_core() -> None:
    assert (SPEC["topology"]["default"], SPEC["topology"]["enum"]) == ("Hierarchical", list(Topology))
    assert (SPEC["failurePolicy"]["default"], SPEC["failurePolicy"]["enum"]) == (
        "FailFast",
        list(FailurePolicy),
    )
    assert AGENT["replicas"]["default"] == 1
    assert AGENT["name"]["maxLength"] == MAX_LABEL
    # The rules with a reason code are CEL rules (their messages carry the code); they agree with the core.
    assert cel(AGENT["replicas"]) == ["self >= 1"]
    assert cel(AGENT["name"]) == [f"self.matches('{DNS1123_LABEL.pattern}')"]
    assert cel(AGENT["runtimeRef"]["properties"]["kind"]) == [f"self in {list(RUNTIME_KINDS)}"]
    assert cel(SCHEMA["properties"]["spec"]) == ["has(self.agents) && size(self.agents) > 0"]
    for path, node in nodes(SCHEMA):
        if "default" in node:
            assert schema_errors(node, node["default"], path) == [], "a default must fit its own schema"


def cel(node: dict[str, Any]) -> list[str]:
    return [" ".join(r["rule"].split()) for r in node.get("x-kubernetes-validations", ())]


def test_cel_rules_speak_the_webhook_s_reason_codes() -> None:
    rules = [
        (path, rule) for path, node in nodes(SCHEMA) for rule in node.get("x-kubernetes-validations", ())
    ]
    codes = "|".join(r.value for r in Reason)

    assert rules
    reasons = set()
    for path, rule in rules:
        assert rule["rule"].strip(), path
        message = rule.get("message") or rule["messageExpression"].lstrip("'\"")
        found = re.match(rf"({codes}): \S", message)
        assert found, f"{path}: {message!r} does not start with a reason code"
        reasons.add(found[1])
    assert {
        "NoAgents",
        "InvalidAgentName",
        "DuplicateAgentName",
        "InvalidReplicas",
        "InvalidRuntimeKind",
        "SelfDependency",
    } <= reasons


# --- the examples against the schemas ---------------------------------------------------------------

GOOD = docs(*sorted((ROOT / "examples/good").glob("*.yaml")))


@pytest.mark.parametrize("obj", GOOD, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in GOOD])
def test_every_good_example_fits_its_schema(obj: dict[str, Any]) -> None:
    assert schema_errors(schema_of(obj["kind"]), obj) == []


POLICIES = docs(
    ROOT / "examples/bad/PolicyViolation.policy.yaml", *sorted((ROOT / "examples/policies").glob("*.yaml"))
)


@pytest.mark.parametrize("policy", POLICIES, ids=[d["metadata"]["name"] for d in POLICIES])
def test_every_example_policy_fits_its_schema(policy: dict[str, Any]) -> None:
    assert policy["kind"] == "AgentGroupPolicy"
    assert schema_errors(schema_of(policy["kind"]), policy) == []


# --- the AgentGroupPolicy CRD ------------------------------------------------------------------------

POLICY_CRD = load(SCHEMAS["AgentGroupPolicy"])
POLICY_SCHEMA = schema_of("AgentGroupPolicy")


def test_the_policy_crd_is_cluster_scoped_with_status_and_short_name_agp() -> None:
    assert POLICY_CRD["metadata"]["name"] == f"agentgrouppolicies.{GROUP}"
    assert (POLICY_CRD["spec"]["group"], POLICY_CRD["spec"]["scope"]) == (GROUP, "Cluster")
    assert "agp" in POLICY_CRD["spec"]["names"]["shortNames"]
    v = version(POLICY_CRD)
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}
    assert [(c["name"], c["jsonPath"]) for c in v["additionalPrinterColumns"]] == [
        ("Action", ".spec.enforcementAction"),
        ("Violations", ".status.totalViolations"),
        ("Audited", ".status.auditTimestamp"),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_the_policy_schema_is_structural_and_every_field_is_described() -> None:
    assert POLICY_SCHEMA["type"] == "object"
    for path, node in nodes(POLICY_SCHEMA):
        assert "type" in node, f"{path} has no type"
        described = not path.endswith(("[]", "{}")) or node["type"] == "object"
        if described and path != "metadata":
            assert node.get("description", "").strip(), f"{path} has no description (kubectl explain)"


def test_the_status_the_audit_writes_fits_the_schema() -> None:
    violation = GroupViolation("team-a", "wide-sweep", "spec.agents", 'policy "p" allows at most 10 agents')
    status = AuditResult(21, (violation,) * 20).status("2030-01-01T12:00:00Z", 4)

    assert schema_errors(POLICY_SCHEMA["properties"]["status"], status) == []
    assert set(status) == set(POLICY_SCHEMA["properties"]["status"]["properties"])


BAD = sorted(p for p in (ROOT / "examples/bad").glob("*.yaml") if p.stem in set(Reason))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_every_bad_example_is_well_formed_so_a_reason_coded_rule_judges_it(path: Path) -> None:
    """No plain schema constraint (whose message has no reason code) catches a bad example first:
    each reaches a CEL rule (checked on the real API server in tests/e2e) or the webhook."""
    (group,) = docs(path)

    assert schema_errors(SCHEMA, group) == []


def test_unknown_and_mistyped_fields_are_caught() -> None:
    (group,) = [d for d in GOOD if d["kind"] == KIND]
    typo = {**group, "spec": {**group["spec"], "dependency": [], "topology": 1}}

    assert schema_errors(SCHEMA, typo) == [
        "spec.topology: must be string, got 1",
        "spec.dependency: unknown field",
    ]
