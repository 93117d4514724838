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


async def verdict(cluster: KubeCluster) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=create_app(cluster))
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
        resp = await client.post(VALIDATE_PATH, json=review(in_namespace(OVERSIZED)))
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
    await wait_until(lambda: cluster.namespace_labels(NAMESPACE) == {"tier": "shared"}, "the new labels")
    assert (await verdict(cluster))["allowed"] is False


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
