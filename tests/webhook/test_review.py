"""Reading reviews: the fast decode answers exactly as the reference path, and usual reviews take it."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.models import AgentGroup
from shared.views import GroupView
from tests.core.strategies import PROPERTY, dags, labels
from tests.webhook.fakes import (
    EXAMPLES,
    NAMESPACE,
    FakeCluster,
    call_asgi,
    example_policy,
    load_yaml,
    review,
)
from webhook.admission import AdmissionRequest, ReviewError, decide, parse_review, review_response
from webhook.app import create_app
from webhook.review import read_fast, read_reference

RUNTIMES = {("AgentRuntime", "rt"), ("CodeInterpreter", "py")}
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
# Keys a mutation may add: the API's own names, Python spellings of them, and unknown ones.
KEYS = st.sampled_from(
    ["replicas", "runtimeRef", "runtime_ref", "from_", "failure_policy", "labels", "status", "x", "dryRun"]
)


@st.composite
def agent_groups(draw: st.DrawFn) -> dict[str, Any]:
    nodes, edges = draw(dags(max_nodes=8))
    names = {n: draw(st.one_of(st.just(n), labels, st.sampled_from(["", "Bad_Name"]))) for n in nodes}
    agents = [
        {
            "name": names[n],
            "replicas": draw(st.integers(min_value=-1, max_value=6)),
            "runtimeRef": {
                "kind": draw(st.sampled_from(["AgentRuntime", "CodeInterpreter", "Pod"])),
                "name": draw(st.sampled_from(["rt", "py", "missing", ""])),
            },
        }
        for n in nodes
    ]
    deps = [{"from": names[a], "to": names[b]} for a, b in edges]
    if draw(st.booleans()):  # a cycle, a self edge or an unknown agent
        deps.append({"from": names[nodes[-1]], "to": draw(st.sampled_from([names[nodes[0]], "ghost"]))})
    meta: dict[str, Any] = {"name": "g", "namespace": NAMESPACE, "labels": {"team": draw(labels)}}
    if draw(st.booleans()):
        meta["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
        meta["ownerReferences"] = [{"kind": "Job", "name": "j"}]
        meta["generation"] = draw(st.integers(min_value=1, max_value=9))
    spec = {"agents": agents, "dependencies": deps}
    spec["topology"] = draw(st.sampled_from(["Hierarchical", "Peer"]))
    group: dict[str, Any] = {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "AgentGroup",
        "metadata": meta,
        "spec": spec,
    }
    if draw(st.booleans()):
        group["status"] = {"phase": "Running", "conditions": [{"type": "Ready"}]}
    return group


@st.composite
def reviews(draw: st.DrawFn) -> dict[str, Any]:
    operation = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE"]))
    new = draw(agent_groups())
    old = draw(st.one_of(st.just(copy.deepcopy(new)), agent_groups())) if operation != "CREATE" else None
    obj = None if operation == "DELETE" else new
    return review(obj, operation=operation, old=old, dry_run=draw(st.booleans()))


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) in a JSON document, the document's root excluded."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield node, key
        yield from _slots(value)


@st.composite
def mutated(draw: st.DrawFn, docs: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """``docs`` with a few values replaced, keys removed or keys added, anywhere."""
    doc = draw(docs)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        container, key = draw(st.sampled_from(list(_slots(doc))))
        how = draw(st.sampled_from(["replace", "remove", "add"]))
        if how == "replace":
            container[key] = draw(JSON_VALUES)
        elif how == "remove" and isinstance(container, dict):
            del container[key]
        elif how == "add" and isinstance(container[key], dict):
            container[key][draw(KEYS)] = draw(JSON_VALUES)
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # the standard library, which writes integers of any size


def answer(req: AdmissionRequest) -> dict[str, Any]:
    cluster = FakeCluster(RUNTIMES, policies=[example_policy(maxReplicasPerAgent=4)])
    return review_response(req, asyncio.run(decide(req, cluster)))


def reference(body: bytes) -> AdmissionRequest | str:
    try:
        return parse_review(json.loads(body))
    except (ValueError, ReviewError) as exc:  # json.JSONDecodeError is a ValueError
        return f"{type(exc).__name__}: {exc}"


def what_rules_read(group: GroupView | None) -> Any:
    if group is None:
        return None
    meta, spec = group.metadata, group.spec
    return (
        (meta.name, meta.namespace, dict(meta.labels), meta.deletion_timestamp),
        (spec.topology, spec.failure_policy),
        [(a.name, a.replicas, a.runtime_ref.kind, a.runtime_ref.name) for a in spec.agents],
        [(d.from_, d.to) for d in spec.dependencies],
    )


def assert_same_answer(body: bytes) -> AdmissionRequest | None:
    """Both ways read the same request from ``body`` (when the fast way reads it) and answer the same."""
    fast = read_fast(body)
    if fast is not None:
        ref = reference(body)
        assert isinstance(ref, AdmissionRequest), f"the reference path refused what the fast one read: {ref}"
        assert not isinstance(fast.object, AgentGroup), "the fast way builds no pydantic models"
        assert replace(fast, object=None, old_object=None) == replace(ref, object=None, old_object=None)
        assert what_rules_read(fast.object) == what_rules_read(ref.object)
        assert what_rules_read(fast.old_object) == what_rules_read(ref.old_object)
        assert answer(fast) == answer(ref)
    return fast


@PROPERTY
@given(reviews())
def test_usual_reviews_take_the_fast_way_and_answer_as_the_reference(doc: dict[str, Any]) -> None:
    assert assert_same_answer(encode(doc)) is not None


@PROPERTY
@given(mutated(reviews()))
def test_any_review_the_fast_way_reads_is_answered_as_the_reference_answers_it(doc: dict[str, Any]) -> None:
    assert_same_answer(encode(doc))


def post(body: bytes) -> tuple[int, Any]:
    """What the app answers ``body`` with, and the decoded answer."""
    app = create_app(FakeCluster(RUNTIMES, policies=[example_policy(maxReplicasPerAgent=4)]))
    message = {"type": "http.request", "body": body, "more_body": False}
    status, answer_body = asyncio.run(call_asgi(app, [message]))
    return status, json.loads(answer_body)


@PROPERTY
@given(st.one_of(mutated(reviews()).map(lambda doc: json.dumps(doc).encode()), st.binary(max_size=200)))
def test_any_body_gets_a_verdict_or_a_clear_400_never_a_500(body: bytes) -> None:
    status, answer = post(body)

    if status == 200:
        assert answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == json.loads(body)["request"]["uid"]
    else:
        assert status == 400
        assert answer["kind"] == "Status"
        assert answer["message"].startswith(
            ("the body is not valid JSON: ", "not a usable AdmissionReview: ")
        )


# Every field the models read, in an UPDATE that carries each of them.
FULL_GROUP: dict[str, Any] = {
    "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
    "kind": "AgentGroup",
    "metadata": {
        "name": "g",
        "namespace": NAMESPACE,
        "uid": "u",
        "generation": 2,
        "resourceVersion": "7",
        "labels": {"team": "a"},
        "annotations": {"note": "n"},
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "deletionTimestamp": None,
        "ownerReferences": [{"kind": "Job", "name": "j"}],
    },
    "spec": {
        "topology": "Hierarchical",
        "failurePolicy": "FailFast",
        "agents": [
            {"name": "a", "role": "r", "replicas": 2, "runtimeRef": {"kind": "AgentRuntime", "name": "rt"}},
            {"name": "b", "replicas": 1, "runtimeRef": {"kind": "CodeInterpreter", "name": "missing"}},
        ],
        "dependencies": [{"from": "a", "to": "b"}],
    },
}
FULL_REVIEW = review(
    copy.deepcopy(FULL_GROUP), operation="UPDATE", old=copy.deepcopy(FULL_GROUP), dry_run=True
)
WRONG_TYPES: list[Any] = [None, True, 0, 1.5, 2**70, "x", [], {}, [{}], {"k": 1}]
LEFT_OUT = object()


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    for container, key in _slots(node):
        if container is node:
            yield (*at, key)
            yield from _paths(container[key], (*at, key))


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@pytest.mark.parametrize("path", list(_paths(FULL_REVIEW)), ids=lambda p: ".".join(map(str, p)))
def test_a_field_of_any_type_or_left_out_anywhere_is_answered_as_the_reference_answers_it(
    path: tuple[Any, ...],
) -> None:
    for value in [*WRONG_TYPES, LEFT_OUT]:
        doc = copy.deepcopy(FULL_REVIEW)
        parent = _at(doc, path[:-1])
        if value is not LEFT_OUT:
            parent[path[-1]] = value
        elif isinstance(parent, dict):
            del parent[path[-1]]
        assert_same_answer(encode(doc))


def _python_name(key: str) -> str:
    return "from_" if key == "from" else re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


@pytest.mark.parametrize(
    "path",
    [p for p in _paths(FULL_REVIEW) if isinstance(p[-1], str) and _python_name(p[-1]) != p[-1]],
    ids=lambda p: ".".join(map(str, p)),
)
def test_a_field_under_its_python_name_is_an_unknown_field_both_ways(path: tuple[Any, ...]) -> None:
    doc = copy.deepcopy(FULL_REVIEW)
    parent = _at(doc, path[:-1])
    parent[_python_name(path[-1])] = parent.pop(path[-1])

    assert_same_answer(encode(doc))


@pytest.mark.parametrize(
    ("body", "read_as"),
    [
        (b"{", "DecodeError: Input data was truncated"),
        (b"[]", "ReviewError: the body must be a JSON object"),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
            "ReviewError: request is missing",
        ),
        (
            encode(review({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})),
            "kind: InvalidSpec: expected apiVersion runtime.agentcube.volcano.sh/v1alpha1, kind AgentGroup; "
            "got v1 Pod",
        ),
        (
            encode(review({**FULL_GROUP, "spec": {"agents": [{"name": "a", "replicas": "two"}]}})),
            "spec.agents[0].replicas: InvalidReplicas: must be a valid integer",
        ),
    ],
    ids=["not JSON", "not an object", "no request", "not an AgentGroup", "a string for replicas"],
)
def test_unusual_bodies_take_the_reference_way_which_names_the_problem(body: bytes, read_as: str) -> None:
    assert read_fast(body) is None
    try:
        shape = read_reference(body).shape
    except (msgspec.DecodeError, ReviewError) as exc:
        got = f"{type(exc).__name__}: {exc}"
    else:
        got = "\n".join(map(str, shape))
    assert got.startswith(read_as)


@pytest.mark.parametrize("path", sorted((EXAMPLES / "good").glob("*.yaml")), ids=lambda p: p.name)
def test_the_good_examples_take_the_fast_way(path: Any) -> None:
    groups = [doc for doc in load_yaml(path) if doc["kind"] == "AgentGroup"]
    for group in groups:
        group["metadata"]["namespace"] = NAMESPACE
        assert assert_same_answer(encode(review(group))) is not None
