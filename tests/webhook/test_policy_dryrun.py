"""A dryrun policy changes nothing for the user: the request is allowed as if it did not exist, and each
finding is counted in a metric and logged, naming the policy."""

from __future__ import annotations

import logging

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.webhook.fakes import EXAMPLES, FakeCluster, example_policy, in_namespace, load_yaml, review
from tests.webhook.test_admission import admit

pytestmark = pytest.mark.anyio

DRYRUN_METRIC = "agentgroup_webhook_policy_dryrun_findings_total"


def dryrun_findings() -> float:
    return REGISTRY.get_sample_value(DRYRUN_METRIC) or 0.0


async def test_a_dryrun_policy_allows_silently_counts_and_logs(
    cluster: FakeCluster, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    [obj] = load_yaml(EXAMPLES / "bad" / "PolicyViolation.yaml")  # 8 replicas of coder
    body = review(in_namespace(obj))
    cluster.installed_policies = []
    without_policy = await admit(client, body)
    cluster.installed_policies = [example_policy(enforcementAction="dryrun", maxSandboxes=4)]
    before = dryrun_findings()
    caplog.set_level(logging.INFO, "webhook.app")

    response = await admit(client, body)

    assert response == without_policy == {"uid": body["request"]["uid"], "allowed": True}
    assert dryrun_findings() == before + 2  # maxReplicasPerAgent and maxSandboxes
    [line] = [r.getMessage() for r in caplog.records if "dryrun" in r.getMessage()]
    assert line.startswith("dryrun policy findings for CREATE of AgentGroup team-a/policy-violation")
    assert 'spec.agents[1].replicas: PolicyViolation: policy "small-fleets" allows at most 3' in line
    assert 'spec.agents: PolicyViolation: policy "small-fleets" allows at most 4 Sandboxes' in line


async def test_a_request_without_dryrun_findings_logs_none(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    [obj] = load_yaml(EXAMPLES / "bad" / "PolicyViolation.yaml")
    caplog.set_level(logging.INFO, "webhook.app")
    before = dryrun_findings()

    response = await admit(client, review(in_namespace(obj)))  # the deny policy refuses it

    assert response["allowed"] is False
    assert dryrun_findings() == before
    assert not [r for r in caplog.records if "dryrun" in r.getMessage()]
