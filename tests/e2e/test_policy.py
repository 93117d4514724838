"""Platform policy as platform teams and users meet it (API.md section 6): the example AgentGroupPolicies
applied with kubectl, judged by `agentgroup webhook` at admission and audited by `agentgroup
controller`, each its own process against the real kube-apiserver.

AgentGroupPolicies are cluster-scoped: every test deletes the ones it applied, and the examples select
namespaces by labels only this module's namespaces carry (require-team-label, which selects every
namespace, lives only as long as its test).
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import yaml

from agentgroup.devcluster import REPO_ROOT, LocalControlPlane, free_port, open_local
from certs import pki
from tests.e2e.kube import Result, get_json, kubectl, wait_for
from tests.e2e.processes import Process, Webhook, judged_by_webhook, serving_files, webhook_configuration

EXAMPLES = REPO_ROOT / "examples"
POLICIES = EXAMPLES / "policies"
CONFIGURATION = "agentgroup-e2e-policy"
DRYRUN_METRIC = "agentgroup_webhook_policy_dryrun_findings_total"
# A policy change must reach the webhook and the audit "within seconds".
PROMPTLY = 15.0


@dataclass
class Bundle:
    webhook: Webhook
    controller: Process

    def logs(self) -> str:
        return (
            f"\n--- webhook log\n{self.webhook.log_tail()}\n--- controller log\n{self.controller.log_tail()}"
        )

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = PROMPTLY) -> None:
        """``wait_for`` that shows both logs when it times out."""
        try:
            wait_for(predicate, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}{self.logs()}") from None


def _metrics(port: int) -> str:
    with open_local(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name{labels}`` in Prometheus text, None when it is not exported."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:{{([^}}]*)}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if found == labels:
            return float(match.group(2))
    return None


@pytest.fixture(scope="module")
def bundle(cluster: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    """The webhook (registered for AgentGroups) and the controller (every namespace, audit every hour:
    whatever the audit reports within a test, a policy or namespace change made it report)."""
    root = tmp_path_factory.mktemp("policy")
    ca = pki.new_ca("agentgroup e2e policy CA", valid_for=timedelta(days=1))
    serving_files(root / "certs", ca)
    hook = Webhook.start(cluster, root / "certs", root / "webhook.log")
    metrics_port, health_port = free_port(), free_port()
    args = [
        *(sys.executable, "-m", "agentgroup", "controller", "--kubeconfig", str(cluster.kubeconfig)),
        *("--leader-elect=false", "--audit-interval=1h", "--log-format", "text"),
        *("--metrics-bind-address", f"127.0.0.1:{metrics_port}"),
        *("--health-probe-bind-address", f"127.0.0.1:{health_port}"),
    ]
    controller = Process.spawn(
        "controller", args, root / "controller.log", metrics_port=metrics_port, health_port=health_port
    )
    try:
        hook.wait_ready()
        kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(webhook_configuration(hook.port, ca, CONFIGURATION)),
            check=True,
        )
        hook.wait(judged_by_webhook, "the API server to call the webhook", timeout=30)
        controller.wait_ready()
        yield Bundle(hook, controller)
    finally:
        kubectl("delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found")
        controller.stop()
        hook.stop()


@dataclass(frozen=True)
class Teams:
    standard: str
    """Labelled team-tier=standard and environment=production: every example policy selects it."""
    other: str
    """No labels of ours: only require-team-label (every namespace) selects it."""


@pytest.fixture
def teams(bundle: Bundle) -> Iterator[Teams]:
    suffix = uuid.uuid4().hex[:6]
    made = Teams(f"e2e-policy-{suffix}-std", f"e2e-policy-{suffix}-other")
    for ns in (made.standard, made.other):
        kubectl("create", "namespace", ns, check=True)
        kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "good" / "01-runtimes.yaml"), check=True)
    kubectl("label", "namespace", made.standard, "team-tier=standard", "environment=production", check=True)
    yield made
    # A terminating namespace keeps its groups for a while: without our labels no policy selects them.
    kubectl("label", "namespace", made.standard, "team-tier-", "environment-", check=True)
    for ns in (made.standard, made.other):
        kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=True)


@pytest.fixture
def policies(bundle: Bundle) -> Iterator[Callable[[str], str]]:
    """``apply(file name in examples/policies)`` -> the policy's name; each one is deleted afterwards."""
    applied: list[str] = []

    def apply(file: str) -> str:
        path = POLICIES / file
        name = str(yaml.safe_load(path.read_text())["metadata"]["name"])
        kubectl("apply", "-f", str(path), check=True)
        applied.append(name)
        return name

    yield apply
    for name in applied:
        kubectl("delete", "agentgrouppolicy", name, "--ignore-not-found", check=True)


def sweep(name: str, agents: int, *, kind: str = "CodeInterpreter", **labels: str) -> dict[str, Any]:
    """examples/policy-check/wide-sweep.yaml with ``agents`` agents (on ``kind``) and ``labels``."""
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / "policy-check" / "wide-sweep.yaml").read_text())
    runtime = {"kind": kind, "name": "py-interp" if kind == "CodeInterpreter" else "planner-rt"}
    obj["metadata"] = {"name": name, "labels": labels}
    obj["spec"]["agents"] = [{"name": f"worker-{i:02d}", "runtimeRef": runtime} for i in range(1, agents + 1)]
    return obj


def apply(ns: str, obj: dict[str, Any], *flags: str) -> Result:
    return kubectl("apply", "-n", ns, *flags, "-f", "-", input=json.dumps(obj))


def dry_run(ns: str, obj: dict[str, Any]) -> Result:
    return apply(ns, obj, "--dry-run=server")


def policy_status(name: str) -> dict[str, Any]:
    obj = get_json("agentgrouppolicy", name)
    assert obj is not None, f"AgentGroupPolicy {name} is gone"
    return dict(obj.get("status") or {})


def listed(name: str) -> list[tuple[str, str]]:
    return [(v["namespace"], v["name"]) for v in policy_status(name).get("violations", [])]


# --- admission --------------------------------------------------------------------------------------


def test_a_deny_policy_refuses_an_over_limit_group_only_where_it_selects(
    bundle: Bundle, teams: Teams, policies: Callable[[str], str]
) -> None:
    wide = sweep("wide-sweep", 12)
    policies("team-limits.yaml")
    bundle.wait(lambda: not dry_run(teams.standard, wide).ok, "the webhook to apply team-limits")

    r = apply(teams.standard, wide)

    assert not r.ok, str(r)
    assert "Error from server (Forbidden)" in r.stderr, str(r)
    assert 'spec.agents: PolicyViolation: policy "team-limits" allows at most 10 agents, got 12' in r.stderr
    assert get_json("agentgroup", "wide-sweep", teams.standard) is None
    # Spec violations and policy violations come in one answer (422: the spec itself is wrong too).
    r = apply(teams.standard, {**wide, "spec": {**wide["spec"], "topology": "Peer"}})
    assert r.stderr.splitlines()[0] == 'The AgentGroup "wide-sweep" is invalid: ', str(r)
    assert [line.split(": ", 2)[:2] for line in r.stderr.splitlines()[1:3]] == [
        ["* spec.topology", "UnsupportedTopology"],
        ["* spec.agents", "PolicyViolation"],
    ], str(r)
    # The selector does not match the other namespace: the same group is created there, silently.
    r = apply(teams.other, wide)
    assert r.ok, str(r)
    assert r.stderr == "", str(r)
    assert get_json("agentgroup", "wide-sweep", teams.other) is not None


def test_a_warn_policy_prints_a_warning_and_the_group_is_created(
    bundle: Bundle, teams: Teams, policies: Callable[[str], str]
) -> None:
    unlabelled = sweep("no-owner", 2)
    policies("require-team-label.yaml")
    bundle.wait(lambda: "Warning:" in dry_run(teams.other, unlabelled).stderr, "the webhook to apply it")

    r = apply(teams.other, unlabelled)

    assert r.ok, str(r)
    assert (
        'Warning: metadata.labels: PolicyViolation: policy "require-team-label" requires the label "team" '
        "on every AgentGroup"
    ) in r.stderr, str(r)
    assert get_json("agentgroup", "no-owner", teams.other) is not None
    r = apply(teams.other, sweep("owned", 2, team="research"))
    assert r.ok, str(r)
    assert r.stderr == "", str(r)


def test_a_dryrun_policy_changes_nothing_for_the_user_and_moves_the_metric(
    bundle: Bundle, teams: Teams, policies: Callable[[str], str]
) -> None:
    def findings() -> float:
        return sample(_metrics(bundle.webhook.metrics_port), DRYRUN_METRIC) or 0.0

    interpreters = sweep("interpreters", 3)  # three CodeInterpreter agents: three findings
    policies("cold-only-rollout.yaml")
    # Nothing a user sees tells that the policy arrived: the metric does (a server-side dry run).
    start = findings()
    bundle.wait(
        lambda: dry_run(teams.standard, interpreters).ok and findings() > start, "the webhook to apply it"
    )
    before = findings()

    r = apply(teams.standard, interpreters)

    assert r.ok, str(r)
    assert (r.stdout, r.stderr) == ("agentgroup.runtime.agentcube.volcano.sh/interpreters created\n", "")
    assert get_json("agentgroup", "interpreters", teams.standard) is not None
    assert findings() == before + 3
    log = bundle.webhook.log.read_text()
    assert f"dryrun policy findings for CREATE of AgentGroup {teams.standard}/interpreters" in log
    assert 'PolicyViolation: policy "cold-only-rollout" allows runtime kinds AgentRuntime' in log
    # Not a production namespace, or only AgentRuntimes: nothing to count.
    assert apply(teams.other, interpreters).ok
    assert apply(teams.standard, sweep("cold", 3, kind="AgentRuntime")).ok
    assert findings() == before + 3


def test_editing_a_policy_limit_changes_the_verdict_within_seconds(
    bundle: Bundle, teams: Teams, policies: Callable[[str], str]
) -> None:
    policies("team-limits.yaml")
    twelve = sweep("twelve", 12)
    bundle.wait(lambda: not dry_run(teams.standard, twelve).ok, "the webhook to apply team-limits")

    kubectl("patch", "agp", "team-limits", "--type=merge", "-p", '{"spec": {"maxAgents": 12}}', check=True)
    bundle.wait(lambda: dry_run(teams.standard, twelve).ok, "the raised limit to apply")
    r = apply(teams.standard, twelve)
    assert r.ok, str(r)

    kubectl("patch", "agp", "team-limits", "--type=merge", "-p", '{"spec": {"maxAgents": 5}}', check=True)
    six = sweep("six", 6)
    bundle.wait(lambda: not dry_run(teams.standard, six).ok, "the lowered limit to apply")
    r = apply(teams.standard, six)
    assert 'policy "team-limits" allows at most 5 agents, got 6' in r.stderr, str(r)
    assert bundle.webhook.proc.poll() is None, "the webhook kept running: no restart"


# --- audit ------------------------------------------------------------------------------------------


def test_the_audit_lists_existing_violators_in_the_policy_status(
    bundle: Bundle, teams: Teams, policies: Callable[[str], str]
) -> None:
    # Groups made before the policy exists: it cannot refuse them, the audit reports them.
    for ns, name, agents in [
        (teams.standard, "wide-a", 12),
        (teams.standard, "wide-b", 11),
        (teams.standard, "small", 2),
        (teams.other, "wide-c", 12),
    ]:
        r = apply(ns, sweep(name, agents))
        assert r.ok, str(r)

    policies("team-limits.yaml")
    bundle.wait(lambda: policy_status("team-limits").get("totalViolations") == 2, "the audit of team-limits")

    status = policy_status("team-limits")
    assert status["violations"] == [
        {
            "namespace": teams.standard,
            "name": name,
            "field": "spec.agents",
            "message": f'policy "team-limits" allows at most 10 agents, got {agents}',
        }
        for name, agents in (("wide-a", 12), ("wide-b", 11))
    ]
    assert status["observedGeneration"] == 1
    assert status["auditTimestamp"]
    name, action, violations, *_ = kubectl(
        "get", "agp", "team-limits", "--no-headers", check=True
    ).stdout.split()
    assert (name, action, violations) == ("team-limits", "deny", "2")
    header = kubectl("get", "agp", "team-limits", check=True).stdout.splitlines()[0].split()
    assert header == ["NAME", "ACTION", "VIOLATIONS", "AUDITED", "AGE"]
    metric = "agentgroup_policy_violations"
    bundle.wait(
        lambda: (
            sample(_metrics(bundle.controller.metrics_port), metric, action="deny", policy="team-limits") == 2
        ),
        "the controller's metric",
    )

    # Editing the policy re-audits at once (the interval is an hour).
    kubectl("patch", "agp", "team-limits", "--type=merge", "-p", '{"spec": {"maxAgents": 11}}', check=True)
    bundle.wait(lambda: listed("team-limits") == [(teams.standard, "wide-a")], "the audit of the new limit")
    assert policy_status("team-limits")["observedGeneration"] == 2

    # So does a namespace leaving the selection.
    kubectl("label", "namespace", teams.standard, "team-tier-", check=True)
    bundle.wait(lambda: policy_status("team-limits").get("totalViolations") == 0, "the audit without it")
    assert listed("team-limits") == []
