"""The leader's policy audit against an in-memory API: what it writes on each policy, when; metrics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agentgroup.cli import parser
from controller import audit as controller_audit
from controller.audit import AuditConfig, PolicyAudit
from controller.cli import audit_config
from shared import audit as shared_audit
from shared.kube.informer import Informer
from shared.kube.raw import ApiError
from shared.kube.resources import AGENT_GROUP_POLICIES, AGENT_GROUPS, NAMESPACES, Resource
from shared.models import API_VERSION, KIND
from tests.controller.fake_api import FakeApi
from tests.controller.harness import SERVED, options, running, wait_until
from tests.controller.objects import T0

pytestmark = pytest.mark.anyio

HOUR = 3600.0
STANDARD = {"team-tier": "standard"}


# --- objects ------------------------------------------------------------------------------------


async def add_namespace(api: FakeApi, name: str, labels: dict[str, str] | None = None) -> None:
    meta = {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}
    await api.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": meta})


async def add_group(api: FakeApi, namespace: str, name: str, agents: int, **labels: str) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "agents": [
                {"name": f"a{i}", "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}}
                for i in range(agents)
            ]
        },
    }
    await api.create(AGENT_GROUPS, body, namespace)


async def add_policy(api: FakeApi, name: str, **spec: Any) -> None:
    body = {"apiVersion": API_VERSION, "kind": "AgentGroupPolicy", "metadata": {"name": name}, "spec": spec}
    await api.create(AGENT_GROUP_POLICIES, body)


def status(api: FakeApi, name: str) -> dict[str, Any]:
    obj = api.obj(AGENT_GROUP_POLICIES, name, "")
    assert obj is not None
    return dict(obj.get("status") or {})


def group_status(api: FakeApi, namespace: str, name: str) -> dict[str, Any]:
    obj = api.obj(AGENT_GROUPS, name, namespace)
    return dict((obj or {}).get("status") or {})


def listed(api: FakeApi, name: str) -> list[tuple[str, str]]:
    return [(v["namespace"], v["name"]) for v in status(api, name).get("violations", [])]


def status_writes(api: FakeApi) -> int:
    return api.writes["patch", "agentgrouppolicies/status"]


def violations_metric(policy: str, action: str) -> float | None:
    return REGISTRY.get_sample_value("agentgroup_policy_violations", {"policy": policy, "action": action})


def audits() -> float:
    return REGISTRY.get_sample_value("agentgroup_policy_audit_duration_seconds_count") or 0.0


async def fleet(api: FakeApi) -> None:
    """team-a (team-tier: standard) with one group over 10 agents and one within; team-b unselected."""
    await add_namespace(api, "team-a", STANDARD)
    await add_namespace(api, "team-b")
    await add_group(api, "team-a", "big", 12)
    await add_group(api, "team-a", "small", 2)
    await add_group(api, "team-b", "big", 12)


TEAM_LIMITS = {"maxAgents": 10, "namespaceSelector": {"matchLabels": STANDARD}}


def audited(interval: float = HOUR, **more: Any) -> Any:
    """Manager options with a fast-reacting audit."""
    config = AuditConfig(interval=interval, debounce=0.01, **more)
    return dataclasses.replace(options(), audit=config)


# --- through the manager ------------------------------------------------------------------------


async def test_the_audit_lists_existing_violators_on_the_policy() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    async with running(api, audited()):
        await add_policy(api, "team-limits", **TEAM_LIMITS)
        await wait_until(lambda: "totalViolations" in status(api, "team-limits"), "the audit's status")

        got = status(api, "team-limits")
        assert got["totalViolations"] == 1
        assert got["observedGeneration"] == 1
        assert got["violations"] == [
            {
                "namespace": "team-a",
                "name": "big",
                "field": "spec.agents",
                "message": 'policy "team-limits" allows at most 10 agents, got 12',
            }
        ]
        assert datetime.fromisoformat(got["auditTimestamp"]).tzinfo is not None
        assert violations_metric("team-limits", "deny") == 1


async def test_warn_and_dryrun_policies_are_audited_too() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    await add_policy(api, "needs-team", enforcementAction="warn", requiredLabels=[{"key": "team"}])
    await add_policy(api, "small-only", enforcementAction="dryrun", maxAgents=1)
    async with running(api, audited()):
        await wait_until(
            lambda: (
                "totalViolations" in status(api, "needs-team")
                and "totalViolations" in status(api, "small-only")
            ),
            "both statuses",
        )
        assert listed(api, "needs-team") == [("team-a", "big"), ("team-a", "small"), ("team-b", "big")]
        assert listed(api, "small-only") == [("team-a", "big"), ("team-a", "small"), ("team-b", "big")]
        assert violations_metric("needs-team", "warn") == 3
        assert violations_metric("small-only", "dryrun") == 3


async def test_a_policy_change_is_audited_at_once_not_at_the_next_interval() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    async with running(api, audited(interval=HOUR)):
        await wait_until(lambda: status(api, "team-limits").get("totalViolations") == 1, "the first audit")

        await api.patch(AGENT_GROUP_POLICIES, "team-limits", {"spec": {"maxAgents": 12}})
        await wait_until(lambda: status(api, "team-limits").get("observedGeneration") == 2, "a new audit")
        assert status(api, "team-limits")["totalViolations"] == 0
        assert status(api, "team-limits")["violations"] == []
        assert violations_metric("team-limits", "deny") == 0

        await api.patch(AGENT_GROUP_POLICIES, "team-limits", {"spec": {"enforcementAction": "warn"}})
        await wait_until(
            lambda: violations_metric("team-limits", "warn") == 0, "the series of the new action"
        )
        assert violations_metric("team-limits", "deny") is None


async def test_a_namespace_label_change_is_audited_at_once() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    async with running(api, audited(interval=HOUR)):
        await wait_until(lambda: listed(api, "team-limits") == [("team-a", "big")], "the first audit")

        await api.patch(NAMESPACES, "team-b", {"metadata": {"labels": STANDARD}})
        await wait_until(
            lambda: listed(api, "team-limits") == [("team-a", "big"), ("team-b", "big")], "team-b audited"
        )
        await api.patch(NAMESPACES, "team-a", {"metadata": {"labels": {"team-tier": None}}})
        await wait_until(lambda: listed(api, "team-limits") == [("team-b", "big")], "team-a left out")


async def test_a_deleted_policy_loses_its_metric_and_the_others_keep_theirs() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    await add_policy(api, "tiny", enforcementAction="warn", maxAgents=1)
    async with running(api, audited()):
        await wait_until(lambda: violations_metric("tiny", "warn") == 3, "both audited")
        await api.delete(AGENT_GROUP_POLICIES, "tiny")
        await wait_until(lambda: violations_metric("tiny", "warn") is None, "the series to go")
        assert violations_metric("team-limits", "deny") == 1


async def test_a_failed_status_write_is_retried() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    api.fail("patch", AGENT_GROUP_POLICIES, ApiError(500, "InternalError", "etcd is unhappy"))
    async with running(api, audited(interval=HOUR, retry=0.01)):
        await wait_until(lambda: status(api, "team-limits").get("totalViolations") == 1, "the retried write")
    assert status_writes(api) == 1


async def test_groups_and_policies_that_do_not_parse_are_skipped() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    broken = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "broken", "namespace": "team-a"}}
    await api.create(AGENT_GROUPS, {**broken, "spec": {"agents": "twelve"}}, "team-a")
    await add_policy(api, "bad", maxAgents="ten")
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    async with running(api, audited()):
        await wait_until(lambda: listed(api, "team-limits") == [("team-a", "big")], "the audit")
        assert status(api, "bad") == {}


async def test_the_audit_waits_for_policies_to_be_served_without_holding_up_the_controller() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    # The policy CRD is not served yet at the first list (installed later): the informer retries.
    api.fail("list", AGENT_GROUP_POLICIES, ApiError(404, "NotFound", "the server could not find it"))
    async with running(api, audited()) as manager:
        await wait_until(lambda: manager.caches is not None and manager.caches.synced, "the controller")
        await wait_until(lambda: "phase" in group_status(api, "team-a", "big"), "the reconciler")
        await wait_until(lambda: listed(api, "team-limits") == [("team-a", "big")], "the audit", within=15)


async def test_with_audit_disabled_nothing_is_written() -> None:
    api = FakeApi(served=SERVED)
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    async with running(api, dataclasses.replace(options(), audit=None)):
        # The leader is at work: it has reconciled the groups (their runtime is missing: Failed).
        await wait_until(lambda: "phase" in group_status(api, "team-a", "big"), "the reconciler")
        await wait_until(lambda: "phase" in group_status(api, "team-b", "big"), "the reconciler")
    assert status(api, "team-limits") == {}
    assert violations_metric("team-limits", "deny") is None


# --- one audit, with a clock the test moves -------------------------------------------------------


@contextlib.asynccontextmanager
async def audit_running(api: FakeApi, config: AuditConfig, now: list[datetime]) -> AsyncIterator[PolicyAudit]:
    stop = asyncio.Event()
    groups = Informer(api, AGENT_GROUPS)
    policy_audit = PolicyAudit(api, groups, config, clock=lambda: now[0])
    informer = asyncio.create_task(groups.run(stop))
    await groups.synced.wait()
    task = asyncio.create_task(policy_audit.run(stop))
    try:
        yield policy_audit
    finally:
        stop.set()
        await asyncio.gather(task, informer)


async def test_an_unchanged_result_is_written_again_only_when_its_timestamp_is_old() -> None:
    api = FakeApi()
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    now = [T0]
    config = AuditConfig(interval=0.01, debounce=0.01, refresh_intervals=100)  # refresh: 1 s
    async with audit_running(api, config, now):
        await wait_until(lambda: status_writes(api) == 1, "the first write")
        assert status(api, "team-limits")["auditTimestamp"] == "2030-01-01T12:00:00Z"

        # Audit after audit, the same result at the same (test) time: nothing to write.
        before = audits()
        await wait_until(lambda: audits() >= before + 10, "ten more audits")
        assert status_writes(api) == 1

        now[0] = T0 + timedelta(seconds=0.9)
        before = audits()
        await wait_until(lambda: audits() >= before + 3, "audits within the refresh time")
        assert status_writes(api) == 1

        now[0] = T0 + timedelta(seconds=1)
        await wait_until(lambda: status_writes(api) == 2, "the refresh")
        assert status(api, "team-limits")["auditTimestamp"] == "2030-01-01T12:00:01Z"
        assert status(api, "team-limits")["totalViolations"] == 1


async def test_a_changed_result_is_written_at_the_next_interval(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    caplog.set_level(logging.INFO, "controller.audit")
    async with audit_running(api, AuditConfig(interval=0.01, debounce=0.01), [T0]):
        await wait_until(lambda: status_writes(api) == 1, "the first write")
        await add_group(api, "team-a", "bigger", 11)  # groups are not a trigger: the interval finds it
        await wait_until(lambda: status(api, "team-limits").get("totalViolations") == 2, "the next audit")
        assert listed(api, "team-limits") == [("team-a", "big"), ("team-a", "bigger")]
    assert "policy team-limits (deny): 2 violations (was 1)" in caplog.messages


class OldCrdApi(FakeApi):
    """An API server whose AgentGroupPolicy CRD predates status.observedGeneration: it prunes it."""

    async def patch(self, res: Resource, name: str, patch: dict[str, Any], *args: Any, **kw: Any) -> Any:
        if res is AGENT_GROUP_POLICIES and "status" in patch:
            patch = {
                **patch,
                "status": {k: v for k, v in patch["status"].items() if k != "observedGeneration"},
            }
        return await super().patch(res, name, patch, *args, **kw)


async def test_a_field_an_older_crd_prunes_is_not_taken_for_a_change() -> None:
    api = OldCrdApi()
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    async with audit_running(api, AuditConfig(interval=0.01, debounce=0.01), [T0]):
        await wait_until(lambda: status_writes(api) == 1, "the first write")
        before = audits()
        await wait_until(lambda: audits() >= before + 10, "ten more audits")
        assert status_writes(api) == 1
        assert "observedGeneration" not in status(api, "team-limits")
        assert status(api, "team-limits")["totalViolations"] == 1


async def test_an_unexpected_failure_is_logged_and_the_audit_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi()
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    failures = [RuntimeError("a bug")]

    def flaky(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_audit(*args)

    real_audit = shared_audit.audit
    monkeypatch.setattr(controller_audit, "audit", flaky)
    async with audit_running(api, AuditConfig(interval=HOUR, debounce=0.01, retry=0.01), [T0]):
        await wait_until(lambda: status(api, "team-limits").get("totalViolations") == 1, "the retried audit")
    assert "the policy audit failed unexpectedly; retrying in 0.01 s" in caplog.messages


async def test_leaving_leadership_stops_the_audit_and_drops_its_series() -> None:
    api = FakeApi()
    await fleet(api)
    await add_policy(api, "team-limits", **TEAM_LIMITS)
    async with audit_running(api, AuditConfig(interval=HOUR, debounce=0.01), [T0]):
        await wait_until(lambda: violations_metric("team-limits", "deny") == 1, "the audit")
    assert violations_metric("team-limits", "deny") is None


# --- the flag -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "interval"), [([], 60.0), (["--audit-interval", "5m"], 300.0), (["--audit-interval", "0"], None)]
)
def test_audit_interval_flag(argv: list[str], interval: float | None) -> None:
    config = audit_config(parser("controller").parse_args(["controller", *argv]))

    assert (config.interval if config else None) == interval


def test_audit_interval_must_be_a_duration(capsys: pytest.CaptureFixture[str]) -> None:
    from agentgroup.cli import main

    assert main(["controller", "--audit-interval", "often"]) == 2
    assert '"often" is not a duration' in capsys.readouterr().err
