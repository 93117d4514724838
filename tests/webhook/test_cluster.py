"""The webhook's cluster view over informers: policies and namespace labels follow the cluster live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.kube.raw import ApiError
from shared.kube.resources import AGENT_GROUP_POLICIES, AGENT_RUNTIMES, CODE_INTERPRETERS, NAMESPACES
from tests.webhook.fakes import (
    EXAMPLES,
    NAMESPACE,
    FakeKube,
    in_namespace,
    load_yaml,
    review,
    runtime,
    wait_until,
)
from webhook.app import VALIDATE_PATH, create_app
from webhook.cluster import KubeCluster

pytestmark = pytest.mark.anyio

[POLICY] = load_yaml(EXAMPLES / "bad" / "PolicyViolation.policy.yaml")
[OVERSIZED] = load_yaml(EXAMPLES / "bad" / "PolicyViolation.yaml")


@pytest.fixture
def kube() -> FakeKube:
    kube = FakeKube()
    kube.put(CODE_INTERPRETERS, runtime("CodeInterpreter", "py-interp"))
    kube.put(AGENT_RUNTIMES, runtime("AgentRuntime", "planner-rt"))
    kube.put(
        NAMESPACES, {"metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}}}
    )
    return kube


@pytest.fixture
async def cluster(kube: FakeKube) -> AsyncIterator[KubeCluster]:
    cluster = KubeCluster(kube)
    stop = asyncio.Event()
    task = asyncio.create_task(cluster.run(stop))
    await wait_until(lambda: cluster.synced, "the caches to sync")
    yield cluster
    stop.set()
    await task


async def verdict(cluster: KubeCluster, namespace: str = NAMESPACE) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=create_app(cluster))
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
        resp = await client.post(VALIDATE_PATH, json=review(in_namespace(OVERSIZED, namespace)))
    response: dict[str, Any] = resp.json()["response"]
    return response


async def test_a_policy_takes_effect_and_is_lifted_without_a_restart(
    kube: FakeKube, cluster: KubeCluster
) -> None:
    assert (await verdict(cluster))["allowed"] is True
    kube.put(AGENT_GROUP_POLICIES, POLICY)
    await wait_until(lambda: cluster.policies(), "the policy to arrive")
    response = await verdict(cluster)
    assert (response["status"]["code"], response["status"]["reason"]) == (403, "Forbidden")
    assert response["status"]["details"]["causes"][0]["reason"] == "PolicyViolation"

    kube.remove(AGENT_GROUP_POLICIES, "small-fleets")
    await wait_until(lambda: not cluster.policies(), "the policy to go")
    assert (await verdict(cluster))["allowed"] is True


async def test_a_policy_selects_namespaces_by_their_live_labels(kube: FakeKube, cluster: KubeCluster) -> None:
    kube.put(
        AGENT_GROUP_POLICIES,
        {**POLICY, "spec": {**POLICY["spec"], "namespaceSelector": {"matchLabels": {"tier": "shared"}}}},
    )
    await wait_until(lambda: cluster.policies(), "the policy to arrive")
    assert (await verdict(cluster))["allowed"] is True
    kube.put(NAMESPACES, {"metadata": {"name": NAMESPACE, "labels": {"tier": "shared"}}})
    await wait_until(
        lambda: (cluster._namespaces.get(NAMESPACE) or {})["metadata"]["labels"] == {"tier": "shared"},
        "the new labels",
    )
    assert (await verdict(cluster))["allowed"] is False
    assert kube.gets == []  # the cache answered


async def runtimes_in(kube: FakeKube, cluster: KubeCluster, namespace: str) -> None:
    """The example group's runtimes in ``namespace``, in the caches (so no GET confirms them)."""
    kube.put(CODE_INTERPRETERS, runtime("CodeInterpreter", "py-interp", namespace))
    kube.put(AGENT_RUNTIMES, runtime("AgentRuntime", "planner-rt", namespace))
    index = cluster.runtime_index.informers
    await wait_until(
        lambda: (
            index["CodeInterpreter"].get("py-interp", namespace)
            and index["AgentRuntime"].get("planner-rt", namespace)
        ),
        "the runtimes in the caches",
    )


SHARED_ONLY = {**POLICY, "spec": {**POLICY["spec"], "namespaceSelector": {"matchLabels": {"tier": "shared"}}}}


async def test_a_namespace_the_cache_has_not_seen_yet_is_read_directly(
    kube: FakeKube, cluster: KubeCluster
) -> None:
    await runtimes_in(kube, cluster, "fresh")
    kube.put(AGENT_GROUP_POLICIES, SHARED_ONLY)
    await wait_until(lambda: cluster.policies(), "the policy to arrive")
    # Created a moment ago: the watch has not delivered it, and its labels select the policy.
    kube.put(NAMESPACES, {"metadata": {"name": "fresh", "labels": {"tier": "shared"}}}, lag=True)

    response = await verdict(cluster, "fresh")

    assert response["allowed"] is False
    assert response["status"]["details"]["causes"][0]["reason"] == "PolicyViolation"
    assert kube.gets == [("Namespace", "fresh", None)]


async def test_a_namespace_that_cannot_be_read_refuses_the_request_until_it_can(
    kube: FakeKube, cluster: KubeCluster
) -> None:
    await runtimes_in(kube, cluster, "fresh")
    kube.put(AGENT_GROUP_POLICIES, SHARED_ONLY)
    await wait_until(lambda: cluster.policies(), "the policy to arrive")
    kube.get_error = ApiError(503, "ServiceUnavailable", "etcd is busy")

    response = await verdict(cluster, "fresh")

    assert response["allowed"] is False
    assert (response["status"]["code"], response["status"]["reason"]) == (500, "InternalError")
    [cause] = response["status"]["details"]["causes"]
    assert (cause["field"], cause["reason"]) == ("metadata.namespace", "NamespaceLookupFailed")
    assert 'could not read the labels of namespace "fresh"' in cause["message"]
    assert cause["message"].endswith("try again")


async def test_without_policies_no_namespace_is_read(kube: FakeKube, cluster: KubeCluster) -> None:
    await runtimes_in(kube, cluster, "fresh")
    kube.get_error = ApiError(503, "ServiceUnavailable", "etcd is busy")

    assert (await verdict(cluster, "fresh"))["allowed"] is True
    assert [g for g in kube.gets if g[0] == "Namespace"] == []


async def test_a_policy_that_does_not_parse_is_ignored_and_logged(
    kube: FakeKube, cluster: KubeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    kube.put(AGENT_GROUP_POLICIES, {"metadata": {"name": "broken"}, "spec": {"maxAgents": "many"}})
    kube.put(AGENT_GROUP_POLICIES, POLICY)
    await wait_until(lambda: cluster.policies(), "the valid policy to arrive")
    assert [p.metadata.name for p in cluster.policies()] == ["small-fleets"]
    assert "ignoring AgentGroupPolicy broken: it does not parse" in caplog.text


async def test_not_synced_until_every_cache_has_listed(kube: FakeKube) -> None:
    kube.list_errors[AGENT_GROUP_POLICIES.plural] = ApiError(404, "NotFound", "the server could not find it")
    cluster = KubeCluster(kube)
    stop = asyncio.Event()
    task = asyncio.create_task(cluster.run(stop))
    await wait_until(lambda: cluster.runtime_index.synced, "the runtime caches to sync")
    assert not cluster.synced
    del kube.list_errors[AGENT_GROUP_POLICIES.plural]  # the CRD got installed: the retry lists it
    await wait_until(lambda: cluster.synced, "every cache to sync")
    stop.set()
    await task
