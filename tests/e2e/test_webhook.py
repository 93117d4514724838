"""The admission webhook as users meet it: `agentgroup webhook` running over TLS, registered with the real
kube-apiserver through a ValidatingWebhookConfiguration, and kubectl as the client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentgroup.devcluster import REPO_ROOT, LocalControlPlane
from certs import pki
from shared.findings import Reason
from tests.e2e.kube import get_json, kubectl
from tests.e2e.processes import (
    WEBHOOK_NAME,
    Webhook,
    judged_by_webhook,
    serving_files,
    webhook_configuration,
)
from tests.webhook.fakes import group, load_yaml
from webhook.app import VALIDATE_PATH

EXAMPLES = REPO_ROOT / "examples"
BAD_EXAMPLES = sorted(p for p in (EXAMPLES / "bad").glob("*.yaml") if p.stem in set(Reason))
CONFIGURATION = "agentgroup-e2e"


@pytest.fixture(scope="module")
def webhook(cluster: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """`agentgroup webhook`, registered for AgentGroups while this module runs."""
    root = tmp_path_factory.mktemp("webhook")
    ca = pki.new_ca("agentgroup e2e webhook CA", valid_for=timedelta(days=1))
    serving_files(root / "certs", ca)
    hook = Webhook.start(cluster, root / "certs", root / "webhook.log")
    try:
        hook.wait_ready()
        registration = webhook_configuration(hook.port, ca, CONFIGURATION)
        kubectl("apply", "-f", "-", input=json.dumps(registration), check=True)
        hook.wait(judged_by_webhook, "the API server to call the webhook", timeout=30)
        yield hook
    finally:
        kubectl("delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found")
        code = hook.stop()
    assert code == 0, f"agentgroup webhook exited {code} after SIGTERM\n{hook.log_tail()}"


@pytest.fixture
def ns(webhook: Webhook, namespace: str) -> str:
    """A fresh namespace holding the example runtimes (planner-rt, reviewer-rt, py-interp)."""
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "good" / "01-runtimes.yaml"), check=True)
    return namespace


@pytest.fixture
def small_fleets_policy() -> Iterator[None]:
    policy = EXAMPLES / "bad" / "PolicyViolation.policy.yaml"
    kubectl("apply", "-f", str(policy), check=True)
    yield
    kubectl("delete", "-f", str(policy), "--ignore-not-found", check=True)


def _apply(ns: str, obj: dict[str, Any], *flags: str) -> Any:
    return kubectl("apply", "-n", ns, *flags, "-f", "-", input=json.dumps(obj))


@pytest.mark.usefixtures("small_fleets_policy")
@pytest.mark.parametrize("path", BAD_EXAMPLES, ids=lambda p: p.stem)
def test_each_bad_example_fails_at_once_naming_its_reason_code(ns: str, path: Path) -> None:
    r = kubectl("apply", "-n", ns, "-f", str(path))
    assert not r.ok, str(r)
    assert f"{path.stem}: " in r.stderr, str(r)
    if path.stem == Reason.POLICY_VIOLATION:
        assert "Error from server (Forbidden)" in r.stderr, str(r)
        assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in r.stderr, str(r)
    else:
        assert "is invalid" in r.stderr, str(r)
    [obj] = load_yaml(path)
    assert get_json("agentgroup", obj["metadata"]["name"], ns) is None


def test_every_violation_is_shown_in_one_answer(ns: str) -> None:
    bad = group(
        ("planner", "AgentRuntime", "planner-rt"),
        ("coder", "CodeInterpreter", "r-interp"),
        ("reviewer", "AgentRuntime", "reviewer-rt"),
        deps=[("planner", "coder"), ("coder", "reviewer"), ("reviewer", "planner"), ("coder", "ghost")],
        name="many",
        namespace=ns,
        topology="Peer",
    )
    r = _apply(ns, bad)
    assert not r.ok
    # One line per violation, "* <field>: <Reason>: <message>" (the wording is shared.rules' own).
    header, *lines = r.stderr.splitlines()
    assert header == 'The AgentGroup "many" is invalid: ', str(r)
    assert [line.split(": ", 2)[:2] for line in lines] == [
        ["* spec.topology", "UnsupportedTopology"],
        ["* spec.dependencies[3].to", "UnknownAgent"],
        ["* spec.dependencies", "DependencyCycle"],
        ["* spec.agents[1].runtimeRef", "RuntimeNotFound"],
    ], str(r)
    assert "planner -> coder -> reviewer -> planner" in lines[2]
    assert f'CodeInterpreter "r-interp" does not exist in namespace "{ns}"' in lines[3]


def test_the_valid_examples_apply_runtimes_first_in_one_command(webhook: Webhook, namespace: str) -> None:
    r = kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "good"))
    assert r.ok, str(r)
    assert "agentgroup.runtime.agentcube.volcano.sh/research-task created" in r.stdout


def test_a_runtime_created_in_the_same_apply_as_its_group_is_found(
    webhook: Webhook, namespace: str, tmp_path: Path
) -> None:
    # Each round creates a new runtime and, a moment later, its group: the watch may not have
    # delivered the runtime yet, and the webhook must not report it missing.
    for i in range(3):
        folder = tmp_path / str(i)
        folder.mkdir()
        interp = {
            "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
            "kind": "CodeInterpreter",
            "metadata": {"name": f"interp-{i}"},
            "spec": {"template": {"image": "ghcr.io/volcano-sh/picod:latest"}},
        }
        (folder / "1-runtime.yaml").write_text(json.dumps(interp))
        pair = group(("coder", "CodeInterpreter", f"interp-{i}"), name=f"fresh-{i}", namespace=namespace)
        (folder / "2-group.yaml").write_text(json.dumps(pair))
        r = kubectl("apply", "-n", namespace, "-f", str(folder))
        assert r.ok, str(r)


def test_a_group_whose_runtime_is_missing_is_rejected(ns: str) -> None:
    r = _apply(ns, group(("coder", "CodeInterpreter", "nowhere"), name="orphan", namespace=ns))
    assert not r.ok
    expected = (
        f'CodeInterpreter "nowhere" does not exist in namespace "{ns}"; create it first or fix runtimeRef'
    )
    assert f"spec.agents[0].runtimeRef: RuntimeNotFound: {expected}" in r.stderr, str(r)


def test_server_side_dry_run_is_judged_and_writes_nothing(ns: str) -> None:
    bad = group(
        ("coder", "CodeInterpreter", "py-interp"), deps=[("coder", "ghost")], name="dry", namespace=ns
    )
    r = _apply(ns, bad, "--dry-run=server")
    assert not r.ok
    assert 'spec.dependencies[0].to: UnknownAgent: "ghost" is not an agent of this group' in r.stderr, str(r)
    good = group(("coder", "CodeInterpreter", "py-interp"), name="dry", namespace=ns)
    r = _apply(ns, good, "--dry-run=server")
    assert r.ok, str(r)
    assert get_json("agentgroup", "dry", ns) is None


def test_an_update_is_judged_and_a_warning_is_shown(ns: str) -> None:
    agents = (("planner", "AgentRuntime", "planner-rt"), ("coder", "CodeInterpreter", "py-interp"))
    r = _apply(ns, group(*agents, deps=[("planner", "coder")], name="edit", namespace=ns))
    assert r.ok, str(r)
    r = _apply(
        ns, group(*agents, deps=[("planner", "coder"), ("coder", "planner")], name="edit", namespace=ns)
    )
    assert not r.ok
    assert (
        "spec.dependencies: DependencyCycle: the dependencies contain the cycle planner -> coder -> planner"
        in (r.stderr)
    ), str(r)
    r = _apply(
        ns, group(*agents, deps=[("planner", "coder"), ("planner", "coder")], name="edit", namespace=ns)
    )
    assert r.ok, str(r)
    assert (
        "Warning: spec.dependencies[1]: DuplicateDependency: the edge planner -> coder repeats "
        "spec.dependencies[0]; remove the duplicate"
    ) in r.stderr, str(r)


def test_metrics_count_requests_and_denials(webhook: Webhook, ns: str) -> None:
    reads_before = _review_reads(webhook)
    _apply(
        ns,
        group(("coder", "CodeInterpreter", "py-interp"), deps=[("coder", "ghost")], name="m", namespace=ns),
    )
    reads = _review_reads(webhook)
    assert reads["fast"] > reads_before["fast"], "the API server's reviews take the fast way"
    assert reads["reference"] == reads_before["reference"]
    text = webhook.metrics()
    assert f'controller_runtime_webhook_requests_total{{code="200",webhook="{VALIDATE_PATH}"}}' in text
    assert 'agentgroup_webhook_denials_total{reason="UnknownAgent"}' in text
    assert f'controller_runtime_webhook_latency_seconds_count{{webhook="{VALIDATE_PATH}"}}' in text
    assert 'agentgroup_informer_synced{resource="codeinterpreters"} 1.0' in text


def test_not_ready_until_a_certificate_is_loaded(cluster: LocalControlPlane, tmp_path: Path) -> None:
    hook = Webhook.start(cluster, tmp_path / "certs", tmp_path / "webhook.log")
    try:
        hook.wait(lambda: "[+]informers-synced ok" in hook.readyz()[1], "the caches to sync")
        code, body = hook.readyz()
        assert code == 503
        assert "[-]certificate-loaded failed" in body
        serving_files(tmp_path / "certs", pki.new_ca("late CA", valid_for=timedelta(days=1)))
        hook.wait_ready()
    finally:
        code = hook.stop()
    assert code == 0, hook.log_tail()


def _review_reads(hook: Webhook) -> dict[str, float]:
    found = re.findall(r'^agentgroup_webhook_review_reads_total\{path="(\w+)"\} (\S+)$', hook.metrics(), re.M)
    return {"fast": 0.0, "reference": 0.0} | {path: float(value) for path, value in found}


def _requests_answered(hook: Webhook) -> float:
    prefix = f'controller_runtime_webhook_requests_total{{code="200",webhook="{VALIDATE_PATH}"}} '
    return sum(
        float(line.removeprefix(prefix)) for line in hook.metrics().splitlines() if line.startswith(prefix)
    )


def test_self_managed_certificates_are_made_injected_and_served(
    cluster: LocalControlPlane, namespace: str, tmp_path: Path
) -> None:
    config = "agentgroup-e2e-self-managed"
    hook = Webhook.start(
        cluster,
        tmp_path / "certs",
        tmp_path / "webhook.log",
        *("--cert-mode", "self-managed", "--service-name", "agentgroup-webhook"),
        *("--service-namespace", namespace, "--webhook-config", config, "--cert-ip", "127.0.0.1"),
        *("--cert-sync-interval", "1s"),
    )
    try:
        kubectl(
            "apply", "-f", "-", input=json.dumps(webhook_configuration(hook.port, None, config)), check=True
        )
        hook.wait_ready()  # the rotator wrote the files the webhook serves

        def injected() -> bool:
            obj = get_json("validatingwebhookconfiguration", config)
            return bool(obj and obj["webhooks"][0]["clientConfig"].get("caBundle"))

        hook.wait(injected, "the rotator to inject the caBundle")
        probe = group(
            ("coder", "CodeInterpreter", "py"), deps=[("coder", "ghost")], name="p", namespace=namespace
        )
        # The API server now trusts the webhook's own CA: its requests succeed over TLS.
        hook.wait(
            lambda: (
                "UnknownAgent" in _apply(namespace, probe, "--dry-run=server").stderr
                and _requests_answered(hook) > 0
            ),
            "the API server to call the self-managed webhook",
        )
    finally:
        kubectl("delete", "validatingwebhookconfiguration", config, "--ignore-not-found")
        code = hook.stop()
    assert code == 0, hook.log_tail()
