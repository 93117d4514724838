"""AdmissionReviews answered by the app in-process: what the kube-apiserver (and so kubectl) gets back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from shared.findings import Reason, Verdict
from shared.rules import RuntimeKey, validate
from tests.webhook.fakes import (
    EXAMPLES,
    NAMESPACE,
    FakeCluster,
    big_group,
    call_asgi,
    example_policy,
    group,
    in_namespace,
    load_yaml,
    review,
)
from webhook.admission import RuntimeLookup
from webhook.app import VALIDATE_PATH, create_app

pytestmark = pytest.mark.anyio

BAD_EXAMPLES = sorted(p for p in (EXAMPLES / "bad").glob("*.yaml") if p.stem in set(Reason))
VALID_AGENTS = (("planner", "AgentRuntime", "planner-rt"), ("coder", "CodeInterpreter", "py-interp"))
VALID = group(*VALID_AGENTS)


async def admit(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(VALIDATE_PATH, json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["apiVersion"] == body["apiVersion"]
    assert answer["kind"] == "AdmissionReview"
    response: dict[str, Any] = answer["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


def rules_verdict(obj: Any, cluster: FakeCluster) -> Verdict:
    """What shared.rules says about ``obj`` in the fake cluster: the webhook must report exactly this."""
    return validate(obj, runtimes=cluster.existing[NAMESPACE], policies=cluster.installed_policies)


def reasons(response: dict[str, Any]) -> list[str]:
    return [c["reason"] for c in response["status"]["details"]["causes"]]


def test_every_reason_code_has_a_bad_example() -> None:
    rule_codes = set(Reason) - {Reason.INVALID_SPEC, Reason.DUPLICATE_DEPENDENCY}
    assert {p.stem for p in BAD_EXAMPLES} == rule_codes


@pytest.mark.parametrize("path", BAD_EXAMPLES, ids=lambda p: p.stem)
async def test_each_bad_example_is_denied_with_its_reason_code(client: httpx.AsyncClient, path: Path) -> None:
    [obj] = load_yaml(path)
    response = await admit(client, review(in_namespace(obj)))
    assert response["allowed"] is False
    status = response["status"]
    assert reasons(response) == [path.stem]
    details = status["details"]
    assert (details["group"], details["kind"], details["name"]) == (
        "runtime.agentcube.volcano.sh",
        "AgentGroup",
        obj["metadata"]["name"],
    )
    [cause] = details["causes"]
    assert cause["message"].startswith(f"{path.stem}: ")  # kubectl shows field and message only
    assert status["message"] == f"{cause['field']}: {cause['message']}"
    policy_only = path.stem == Reason.POLICY_VIOLATION
    assert (status["code"], status["reason"]) == ((403, "Forbidden") if policy_only else (422, "Invalid"))


async def test_the_good_example_is_allowed_without_warnings(client: httpx.AsyncClient) -> None:
    [obj] = load_yaml(EXAMPLES / "good" / "02-group.yaml")
    response = await admit(client, review(in_namespace(obj)))
    assert response == {"uid": response["uid"], "allowed": True}


async def test_every_violation_is_reported_at_once_with_one_cause_each(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    [obj] = load_yaml(EXAMPLES / "bad" / "many-violations.yaml")
    response = await admit(client, review(in_namespace(obj)))
    status = response["status"]
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert sorted(set(reasons(response))) == sorted(
        {
            "UnsupportedTopology",
            "InvalidAgentName",
            "InvalidReplicas",
            "InvalidRuntimeKind",
            "DuplicateAgentName",
            "UnknownAgent",
            "SelfDependency",
            "DependencyCycle",
            "RuntimeNotFound",
        }
    )
    causes = status["details"]["causes"]
    assert status["message"].splitlines() == [f"{c['field']}: {c['message']}" for c in causes]
    assert all(c["message"].startswith(f"{c['reason']}: ") for c in causes)
    assert {"field": "spec.agents[2].runtimeRef", "reason": "RuntimeNotFound"}.items() <= causes[-1].items()
    assert 'AgentRuntime "reviewer-v2" does not exist in namespace "team-a"' in causes[-1]["message"]
    [warning] = response["warnings"]
    assert warning.startswith("spec.dependencies[4]: DuplicateDependency: ")
    assert response["warnings"] == [str(w) for w in rules_verdict(in_namespace(obj), cluster).warnings]


async def test_policy_and_spec_violations_together_answer_invalid(client: httpx.AsyncClient) -> None:
    obj = group(*[(f"a{i}", "AgentRuntime", "planner-rt") for i in range(6)], topology="Peer")
    response = await admit(client, review(obj))
    assert response["status"]["code"] == 422
    assert reasons(response) == ["UnsupportedTopology", "PolicyViolation"]
    assert 'policy "small-fleets" allows at most 5 agents, got 6' in response["status"]["message"]


async def test_a_warn_policy_allows_with_a_warning(cluster: FakeCluster, client: httpx.AsyncClient) -> None:
    cluster.installed_policies = [example_policy(enforcementAction="warn")]
    [obj] = load_yaml(EXAMPLES / "bad" / "PolicyViolation.yaml")
    response = await admit(client, review(in_namespace(obj)))
    assert response["allowed"] is True
    [warning] = response["warnings"]
    assert warning.startswith('spec.agents[1].replicas: PolicyViolation: policy "small-fleets" ')
    assert response["warnings"] == [str(w) for w in rules_verdict(in_namespace(obj), cluster).warnings]


async def test_a_policy_applies_only_where_its_namespace_selector_matches(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    cluster.installed_policies = [example_policy(namespaceSelector={"matchLabels": {"tier": "shared"}})]
    [obj] = load_yaml(EXAMPLES / "bad" / "PolicyViolation.yaml")
    assert (await admit(client, review(in_namespace(obj))))["allowed"] is True
    cluster.labels[NAMESPACE] = {"tier": "shared"}
    assert reasons(await admit(client, review(in_namespace(obj)))) == ["PolicyViolation"]


async def test_update_judges_the_new_object(cluster: FakeCluster, client: httpx.AsyncClient) -> None:
    cyclic = group(*VALID_AGENTS, deps=[("planner", "coder"), ("coder", "planner")])
    response = await admit(client, review(cyclic, operation="UPDATE", old=VALID))
    assert reasons(response) == ["DependencyCycle"]
    assert "planner -> coder -> planner" in response["status"]["message"]
    assert response["status"]["message"] == rules_verdict(cyclic, cluster).message
    assert (await admit(client, review(VALID, operation="UPDATE", old=cyclic)))["allowed"] is True


async def test_update_keeps_runtime_refs_the_group_already_had(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    # The runtime was deleted after the group was admitted: a label change must still go through.
    cluster.existing[NAMESPACE].discard(("CodeInterpreter", "py-interp"))
    relabelled = {**VALID, "metadata": {**VALID["metadata"], "labels": {"team": "a"}}}
    assert (await admit(client, review(relabelled, operation="UPDATE", old=VALID)))["allowed"] is True
    # A new reference to a missing runtime is still refused.
    moved = group(("planner", "AgentRuntime", "planner-rt"), ("coder", "CodeInterpreter", "r-interp"))
    response = await admit(client, review(moved, operation="UPDATE", old=VALID))
    assert reasons(response) == ["RuntimeNotFound"]
    assert cluster.lookups[-1] == (NAMESPACE, frozenset({("CodeInterpreter", "r-interp")}))


async def test_update_that_keeps_spec_and_labels_is_allowed_unjudged(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    # Six agents, admitted before the small-fleets policy (at most 5) came, on runtimes deleted since:
    # the controller's annotation write (retry bookkeeping) and `kubectl annotate` still go through.
    old = group(*[(f"a{i}", "AgentRuntime", "gone-rt") for i in range(6)])
    annotated = {**old, "metadata": {**old["metadata"], "annotations": {"note": "x"}}}
    assert (await admit(client, review(annotated, operation="UPDATE", old=old)))["allowed"] is True
    assert cluster.lookups == []
    # A spec change judges the whole group again.
    bigger = group(*[(f"a{i}", "AgentRuntime", "gone-rt") for i in range(7)])
    response = await admit(client, review(bigger, operation="UPDATE", old=old))
    assert reasons(response) == ["PolicyViolation"]


async def test_delete_and_status_updates_are_allowed_unjudged(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    broken = group(topology="Peer")
    assert (await admit(client, review(None, operation="DELETE", old=broken)))["allowed"] is True
    status_update = review(broken, operation="UPDATE", old=broken, sub_resource="status")
    assert (await admit(client, status_update))["allowed"] is True
    being_deleted = {
        **broken,
        "metadata": {**broken["metadata"], "deletionTimestamp": "2030-01-01T00:00:00Z"},
    }
    assert (await admit(client, review(being_deleted, operation="UPDATE", old=broken)))["allowed"] is True
    assert cluster.lookups == []


async def test_dry_run_is_judged_the_same(client: httpx.AsyncClient) -> None:
    bad = group(("coder", "CodeInterpreter", "r-interp"))
    assert reasons(await admit(client, review(bad, dry_run=True))) == ["RuntimeNotFound"]
    assert (await admit(client, review(VALID, dry_run=True)))["allowed"] is True


async def test_the_request_api_version_is_echoed(client: httpx.AsyncClient) -> None:
    response = await admit(client, review(VALID, api_version="admission.k8s.io/v1beta1", uid="abc-123"))
    assert response == {"uid": "abc-123", "allowed": True}


async def test_a_large_group_is_judged_with_one_lookup(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    cluster.installed_policies = []
    assert (await admit(client, review(big_group(300))))["allowed"] is True
    assert cluster.lookups == [(NAMESPACE, frozenset({("AgentRuntime", "planner-rt")}))]


# --- things that are not an AgentGroup -------------------------------------------------------------


async def test_an_object_that_is_not_an_agent_group_is_denied(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": NAMESPACE}}
    response = await admit(client, review(config_map))
    assert response["status"]["code"] == 422
    assert response["status"]["message"].startswith("kind: InvalidSpec: ")
    assert "got v1 ConfigMap" in response["status"]["message"]
    assert response["status"]["message"] == rules_verdict(config_map, cluster).message


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"agents": "planner"}, "spec.agents", "InvalidSpec"),
        (
            {
                "agents": [
                    {"name": "a", "replicas": "two", "runtimeRef": {"kind": "AgentRuntime", "name": "r"}}
                ]
            },
            "spec.agents[0].replicas",
            "InvalidReplicas",
        ),
        ("everything", "spec", "InvalidSpec"),
    ],
)
async def test_a_spec_of_the_wrong_shape_is_denied_naming_the_field(
    cluster: FakeCluster, client: httpx.AsyncClient, spec: Any, field: str, reason: str
) -> None:
    obj = {**group(), "spec": spec}
    response = await admit(client, review(obj))
    assert response["allowed"] is False
    [cause] = response["status"]["details"]["causes"]
    assert (cause["field"], cause["reason"]) == (field, reason)
    assert response["status"]["message"] == rules_verdict(obj, cluster).message


# --- failures of the webhook itself --------------------------------------------------------------


async def test_a_runtime_that_cannot_be_checked_denies_with_internal_error(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    cluster.failing[("CodeInterpreter", "py-interp")] = "503 ServiceUnavailable: etcd is down"
    response = await admit(client, review(VALID))
    status = response["status"]
    assert (status["code"], status["reason"]) == (500, "InternalError")
    assert status["message"] == (
        'spec.agents[1].runtimeRef: RuntimeLookupFailed: could not check that CodeInterpreter "py-interp" '
        'exists in namespace "team-a" (503 ServiceUnavailable: etcd is down); try again'
    )
    # Real violations still come first, with their own status code.
    response = await admit(client, review(group(*VALID_AGENTS, topology="Peer")))
    assert (response["status"]["code"], reasons(response)) == (
        422,
        ["UnsupportedTopology", "RuntimeLookupFailed"],
    )


async def test_a_bug_costs_one_clear_denial_and_the_app_keeps_serving(
    cluster: FakeCluster, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(namespace: str, refs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cluster, "runtimes", broken)
    response = await admit(client, review(VALID))
    assert response["status"]["code"] == 500
    assert response["status"]["message"] == (
        ": InternalError: the webhook failed while judging this request; its log has the details"
    )
    monkeypatch.undo()
    assert (await admit(client, review(VALID)))["allowed"] is True


# --- bad HTTP input ------------------------------------------------------------------------------


async def bad_request(client: httpx.AsyncClient, expected_code: int, **kwargs: Any) -> str:
    resp = await client.post(VALIDATE_PATH, **kwargs)
    assert resp.status_code == expected_code, resp.text
    status = resp.json()
    assert {"kind": "Status", "status": "Failure", "code": expected_code}.items() <= status.items()
    message: str = status["message"]
    return message


async def test_a_body_over_the_limit_is_refused(client: httpx.AsyncClient) -> None:
    huge = review(big_group(2000))
    assert await bad_request(client, 413, json=huge) == "the body exceeds 65536 bytes"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b"{" + b" " * 70_000

    message = await bad_request(client, 413, content=chunks(), headers={"content-type": "application/json"})
    assert message == "the body exceeds 65536 bytes"


async def test_a_body_sent_in_pieces_is_read_whole(cluster: FakeCluster) -> None:
    body = orjson.dumps(review(VALID))
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in pieces]
    messages[-1]["more_body"] = False

    status, answer = await call_asgi(create_app(cluster), messages)

    assert status == 200
    assert orjson.loads(answer)["response"]["allowed"] is True


async def test_a_client_that_goes_away_mid_body_is_answered_and_the_app_keeps_serving(
    cluster: FakeCluster,
) -> None:
    app = create_app(cluster)
    half = orjson.dumps(review(VALID))[:100]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": half, "more_body": True},
        {"type": "http.disconnect"},
    ]

    status, answer = await call_asgi(app, messages)

    assert status == 400
    assert orjson.loads(answer)["message"] == "the client disconnected before sending the whole body"
    whole = [{"type": "http.request", "body": orjson.dumps(review(VALID)), "more_body": False}]
    assert (await call_asgi(app, whole))[0] == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/yaml", ""])
async def test_a_wrong_content_type_is_refused(client: httpx.AsyncClient, content_type: str) -> None:
    message = await bad_request(client, 415, content=b"{}", headers={"content-type": content_type})
    assert message == f"Content-Type must be application/json, got {content_type!r}"


async def test_a_content_type_with_charset_is_accepted(client: httpx.AsyncClient) -> None:
    body = review(VALID)
    resp = await client.post(
        VALIDATE_PATH,
        content=httpx.Request("POST", "/", json=body).content,
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert resp.json()["response"]["allowed"] is True


async def test_malformed_json_is_refused(client: httpx.AsyncClient) -> None:
    message = await bad_request(
        client, 400, content=b'{"apiVersion": ', headers={"content-type": "application/json"}
    )
    assert message.startswith("the body is not valid JSON: ")


@pytest.mark.parametrize("where", ["in an unknown field", "in a field the webhook reads"])
async def test_json_nested_past_the_recursion_limit_is_refused(client: httpx.AsyncClient, where: str) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    request = b'"uid": "u", "operation": "CREATE", '
    request += (
        b'"x": %s, "object": {}' % deep if where.startswith("in an") else b'"object": {"metadata": %s}' % deep
    )
    body = b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {%s}}' % request

    message = await bad_request(client, 400, content=body, headers={"content-type": "application/json"})

    assert message.startswith("not a usable AdmissionReview: the body nests deeper than ")
    assert (await admit(client, review(VALID)))["allowed"] is True


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], "the body must be a JSON object: an admission.k8s.io/v1 AdmissionReview"),
        ({"kind": "AdmissionReview"}, "apiVersion must be admission.k8s.io/v1, got None"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}, "kind must be AdmissionReview, got 'Pod'"),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
            "request is missing: an AdmissionReview sent for review carries a request object",
        ),
        (
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"operation": "CREATE"},
            },
            "request.uid is missing: the response must echo it, so it cannot be answered",
        ),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}},
            "request.uid must be a string, got int",
        ),
        (
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "operation": "PUT"},
            },
            "request.operation must be one of CREATE, UPDATE, DELETE, CONNECT, got 'PUT'",
        ),
        (
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "operation": "CREATE"},
            },
            "request.object is missing: a CREATE review carries the object to judge",
        ),
    ],
)
async def test_a_review_that_cannot_be_answered_is_refused(
    client: httpx.AsyncClient, body: Any, expected: str
) -> None:
    assert await bad_request(client, 400, json=body) == f"not a usable AdmissionReview: {expected}"


async def test_other_methods_and_paths_are_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get(VALIDATE_PATH)).status_code == 405
    assert (await client.post("/validate", json=review(VALID))).status_code == 404


# --- metrics and logs ------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_requests_verdicts_and_reason_codes(client: httpx.AsyncClient) -> None:
    hook = {"webhook": VALIDATE_PATH}
    series = {
        "ok": ("controller_runtime_webhook_requests_total", {"code": "200", **hook}),
        "bad": ("controller_runtime_webhook_requests_total", {"code": "415", **hook}),
        "latency": ("controller_runtime_webhook_latency_seconds_count", hook),
        "denied": ("agentgroup_webhook_admissions_total", {"operation": "CREATE", "verdict": "denied"}),
        "allowed": ("agentgroup_webhook_admissions_total", {"operation": "UPDATE", "verdict": "allowed"}),
        "cycle": ("agentgroup_webhook_denials_total", {"reason": "DependencyCycle"}),
        "duplicate": ("agentgroup_webhook_warnings_total", {"reason": "DuplicateDependency"}),
        "fast": ("agentgroup_webhook_review_reads_total", {"path": "fast"}),
        "reference": ("agentgroup_webhook_review_reads_total", {"path": "reference"}),
    }
    before = {key: sample(name, **labels) for key, (name, labels) in series.items()}
    await admit(client, review(group(*VALID_AGENTS, deps=[("planner", "coder"), ("coder", "planner")])))
    await admit(
        client, review(group(*VALID_AGENTS, deps=[("planner", "coder")] * 2), operation="UPDATE", old=VALID)
    )
    await client.post(VALIDATE_PATH, content=b"x", headers={"content-type": "text/plain"})
    await client.post(VALIDATE_PATH, content=b"{", headers={"content-type": "application/json"})
    after = {key: sample(name, **labels) for key, (name, labels) in series.items()}
    assert {k: after[k] - before[k] for k in series} == {
        "ok": 2,
        "bad": 1,
        "latency": 4,
        "denied": 1,
        "allowed": 1,
        "cycle": 1,
        "duplicate": 1,
        "fast": 2,
        "reference": 1,
    }
    assert sample("controller_runtime_webhook_requests_in_flight", **hook) == 0


async def test_the_in_flight_gauge_counts_the_requests_being_judged(
    cluster: FakeCluster, client: httpx.AsyncClient
) -> None:
    judging, release = asyncio.Event(), asyncio.Event()
    lookup = cluster.runtimes

    async def slow_lookup(namespace: str, refs: Collection[RuntimeKey]) -> RuntimeLookup:
        judging.set()
        await release.wait()
        return await lookup(namespace, refs)

    cluster.runtimes = slow_lookup  # type: ignore[method-assign]
    in_flight = ("controller_runtime_webhook_requests_in_flight", {"webhook": VALIDATE_PATH})
    request = asyncio.create_task(admit(client, review(VALID)))
    await asyncio.wait_for(judging.wait(), timeout=10)
    assert sample(in_flight[0], **in_flight[1]) == 1
    release.set()
    assert (await request)["allowed"] is True
    assert sample(in_flight[0], **in_flight[1]) == 0


async def test_one_log_line_per_denial_and_none_per_allowed_request(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhook")
    await admit(client, review(VALID))
    assert caplog.records == []
    await admit(client, review(group(("Coder", "CodeInterpreter", "r-interp"), topology="Peer")))
    [record] = caplog.records
    assert record.getMessage() == (
        "denied CREATE of AgentGroup team-a/g: InvalidAgentName, RuntimeNotFound, UnsupportedTopology"
    )
    assert record.namespace == NAMESPACE  # type: ignore[attr-defined]
    assert record.agentgroup == "g"  # type: ignore[attr-defined]
    assert record.user == "alice"  # type: ignore[attr-defined]
    assert record.reasons == ["InvalidAgentName", "RuntimeNotFound", "UnsupportedTopology"]  # type: ignore[attr-defined]
