"""The Helm chart on the real control plane: what the API server says about the rendered manifests, and
`helm install`, `helm upgrade` and `helm uninstall` as a cluster admin runs them.

No kubelet runs here, so no pod ever starts: a Pod object created by a ReplicaSet in a namespace that
enforces the Pod Security "restricted" level is the proof that the pods pass it, and with no webhook
pod behind the Service the API server's calls to the webhook fail, which shows what a dead webhook
can and cannot block.

cert-manager cannot run here either: its mode is checked by a server-side dry run against trimmed
copies of its CRDs (tests/chart/crds/), which keep upstream's schema for every field the chart sets.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from agentgroup.devcluster import REPO_ROOT, LocalControlPlane
from certs import pki
from certs.check import check_pair, service_dns_names
from certs.rotation import ANNOTATION_MANAGED_BY, MANAGED_BY
from tests.chart.helm import CHART, Helm, find_helm
from tests.e2e.kube import get_json, kubectl, wait_for

CHART_CRDS = REPO_ROOT / "tests" / "chart" / "crds"
HOOK_NAME = "validate.agentgroups.runtime.agentcube.volcano.sh"
GROUP = "runtime.agentcube.volcano.sh"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}
VALIDITY = timedelta(days=1)
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBplaceholder\n-----END CERTIFICATE-----\n"
MODES: dict[str, list[str]] = {
    "selfManaged": [],
    "certManager": ["--set", "certificates.mode=certManager"],
    "certManager-existing-issuer": [
        *("--set", "certificates.mode=certManager"),
        *("--set", "certificates.certManager.issuerRef.name=corp-ca"),
        *("--set", "certificates.certManager.issuerRef.kind=ClusterIssuer"),
        *("--set", "certificates.certManager.issuerRef.group=cert-manager.io"),
    ],
    "secret": [
        *("--set", "certificates.mode=secret", "--set", "certificates.secretName=my-tls"),
        *("--set", f"certificates.caBundle={CA_PEM}"),
    ],
    "metrics": [
        *("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true"),
    ],
}


def group_yaml(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "AgentGroup",
            "metadata": {"name": name},
            "spec": {"agents": [{"name": "solo", "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}}]},
        }
    )


def create_namespace(name: str, labels: dict[str, str] | None = None) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    kubectl("create", "-f", "-", input=json.dumps(doc), check=True)


@dataclass
class Release:
    name: str
    namespace: str
    install_output: str

    @property
    def webhook(self) -> str:
        return f"{self.name}-webhook"

    @property
    def controller(self) -> str:
        return f"{self.name}-controller"

    @property
    def webhook_sa(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.webhook}"

    @property
    def controller_sa(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.controller}"


@pytest.fixture(scope="module")
def helm(cluster: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(find_helm(), tmp_path_factory.mktemp("helm-home"), kubeconfig=cluster.kubeconfig)


def _remove(helm: Helm, name: str, namespace: str) -> None:
    """Leave nothing behind, whatever state the release is in (the teardown of a failed test too)."""
    helm.run("uninstall", name, "-n", namespace, "--ignore-not-found")
    # If the uninstall failed, the cluster-scoped objects would outlive the namespace: the webhook
    # configuration would then refuse every AgentGroup of the later tests.
    kubectl("delete", "validatingwebhookconfiguration", f"{name}-webhook", "--ignore-not-found")
    selector = f"app.kubernetes.io/instance={name}"
    kubectl("delete", "clusterrolebindings,clusterroles", "-l", selector, "--ignore-not-found")
    kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


def _install(helm: Helm, name: str, *args: str) -> Release:
    """Install the chart as `name` into a new namespace that enforces the restricted level."""
    namespace = f"{name}-{uuid.uuid4().hex[:6]}"
    create_namespace(namespace, RESTRICTED)
    r = helm.run("install", name, str(CHART), "-n", namespace, *args)
    if not r.ok:
        _remove(helm, name, namespace)
        raise AssertionError(f"helm install failed:\n{r}")
    return Release(name, namespace, r.stdout)


@pytest.fixture(scope="module")
def release(helm: Helm) -> Iterator[Release]:
    """The chart installed with its default values, left as installed for the tests that only look."""
    rel = _install(helm, "agentgroup-e2e")
    yield rel
    _remove(helm, rel.name, rel.namespace)


@pytest.fixture
def install(helm: Helm) -> Iterator[Callable[..., Release]]:
    """Install the chart for one test; everything it made is removed after the test, whatever happened.

    While a release is installed its (dead) webhook refuses AgentGroups in every namespace but its own
    and kube-system, so no release outlives the test that made it.
    """
    made: list[Release] = []

    def _make(name: str, *args: str) -> Release:
        rel = _install(helm, name, *args)
        made.append(rel)
        return rel

    yield _make
    for rel in reversed(made):
        _remove(helm, rel.name, rel.namespace)


# ------------------------------------------------------------------------------ server-side dry run


@pytest.fixture(scope="module")
def chart_crds(cluster: LocalControlPlane) -> Iterator[None]:
    cluster.install_crds(CHART_CRDS)
    yield
    kubectl("delete", "-f", str(CHART_CRDS), "--ignore-not-found", "--wait=false")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_rendered_manifests_pass_a_server_side_dry_run(helm: Helm, chart_crds: None, mode: str) -> None:
    namespace = f"chart-dry-run-{uuid.uuid4().hex[:6]}"
    create_namespace(namespace, RESTRICTED)
    try:
        manifests = helm.run(
            "template", "dry-run", str(CHART), "-n", namespace, "--include-crds", *MODES[mode], check=True
        ).stdout
        kinds = sorted({doc["kind"] for doc in yaml.safe_load_all(manifests) if doc})
        r = kubectl(
            *("apply", "--server-side", "--dry-run=server", "--field-manager=chart-dry-run"),
            *("--force-conflicts", "-f", "-"),
            input=manifests,
        )
        assert r.ok, r
        lines = r.stdout.splitlines()
        assert lines, r
        assert all(line.endswith("serverside-applied (server dry run)") for line in lines), r
        # The namespace warns on the restricted level too: the Deployments' pod templates would pass it.
        assert "would violate PodSecurity" not in r.stderr, r
        assert "Warning" not in r.stderr, r
        assert {"Deployment", "ValidatingWebhookConfiguration", "CustomResourceDefinition"} <= set(kinds)
        if mode.startswith("certManager"):
            assert "Certificate" in kinds
        if mode == "metrics":
            assert {"ServiceMonitor", "PrometheusRule"} <= set(kinds)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")


# ----------------------------------------------------------------------------------------- install


def test_install_prints_how_to_check_it(release: Release) -> None:
    notes = release.install_output.split("NOTES:", 1)[1]
    assert (
        f"kubectl -n {release.namespace} rollout status deployment/{release.webhook} "
        f"deployment/{release.controller}"
    ) in notes
    assert f"validatingwebhookconfiguration {release.webhook}" in notes
    assert "kubectl create --dry-run=server" in notes
    assert f"kubectl -n {release.namespace} get lease agentgroup-controller" in notes


def _pods(namespace: str, component: str) -> list[dict[str, Any]]:
    r = kubectl(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/component={component}", "-o", "json"
    )
    assert r.ok, r
    items: list[dict[str, Any]] = json.loads(r.stdout)["items"]
    return items


@pytest.mark.parametrize(("component", "replicas"), [("webhook", 3), ("controller", 2)])
def test_replica_sets_create_pods_that_pass_the_restricted_level(
    release: Release, component: str, replicas: int
) -> None:
    labels = (get_json("namespace", release.namespace) or {})["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    def all_pods() -> list[dict[str, Any]] | None:
        pods = _pods(release.namespace, component)
        return pods if len(pods) == replicas else None

    pods = wait_for(all_pods, 60, f"{replicas} {component} pods in {release.namespace}")
    for pod in pods:
        owner = pod["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ReplicaSet"
        assert owner["name"].startswith(f"{release.name}-{component}-")
        assert pod["spec"]["serviceAccountName"] == f"{release.name}-{component}"
    # Nothing refused a pod: the ReplicaSet reports no ReplicaFailure.
    (rs_name,) = {p["metadata"]["ownerReferences"][0]["name"] for p in pods}
    rs = get_json("replicaset", rs_name, release.namespace)
    assert rs is not None
    assert [c for c in rs.get("status", {}).get("conditions", []) if c["type"] == "ReplicaFailure"] == []


def test_the_namespace_really_enforces_the_restricted_level(release: Release) -> None:
    # The control for the test above: a pod that breaks the level is refused in the same namespace.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
    }
    r = kubectl("create", "--dry-run=server", "-n", release.namespace, "-f", "-", input=json.dumps(pod))
    assert not r.ok
    assert 'violates PodSecurity "restricted:latest"' in r.stderr, r


def test_webhook_configuration_is_as_specified(release: Release) -> None:
    config = get_json("validatingwebhookconfiguration", release.webhook)
    assert config is not None
    (hook,) = config["webhooks"]
    assert hook["name"] == HOOK_NAME
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 5
    assert hook["sideEffects"] == "None"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["rules"] == [
        {
            "apiGroups": [GROUP],
            "apiVersions": ["v1alpha1"],
            "resources": ["agentgroups"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": [release.namespace, "kube-system"],
        }
    ]
    _assert_points_at_the_webhook(release, hook)


def _assert_points_at_the_webhook(release: Release, hook: dict[str, Any]) -> None:
    """The configuration's Service exists, and its port leads to the webhook container's HTTPS port."""
    ref = hook["clientConfig"]["service"]
    assert (ref["name"], ref["namespace"]) == (release.webhook, release.namespace)
    service = get_json("service", ref["name"], ref["namespace"])
    assert service is not None
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
    deployment = get_json("deployment", release.webhook, release.namespace)
    assert deployment is not None
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in [p["name"] for p in container["ports"]]


def test_rbac_and_pdbs_exist_as_specified(release: Release) -> None:
    for kind in ("clusterrole", "role"):
        for name in (release.webhook, release.controller):
            role = get_json(kind, name, release.namespace if kind == "role" else None)
            assert role is not None, (kind, name)
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(key, []), (kind, name, rule)
    for kind in ("clusterrolebinding", "rolebinding"):
        for name, sa in ((release.webhook, release.webhook_sa), (release.controller, release.controller_sa)):
            binding = get_json(kind, name, release.namespace if kind == "rolebinding" else None)
            assert binding is not None
            subject = binding["subjects"][0]
            assert f"system:serviceaccount:{subject['namespace']}:{subject['name']}" == sa
            assert binding["roleRef"]["name"] == name

    pdb = get_json("poddisruptionbudget", release.webhook, release.namespace)
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 1
    selector = ",".join(f"{k}={v}" for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    r = kubectl("get", "pods", "-n", release.namespace, "-l", selector, "-o", "name")
    assert len(r.stdout.split()) == 3, r
    controller_pdb = get_json("poddisruptionbudget", release.controller, release.namespace)
    assert controller_pdb is not None
    assert controller_pdb["spec"]["maxUnavailable"] == 1


def can_i(
    user: str, verb: str, resource: str, *, namespace: str | None = None, subresource: str = ""
) -> bool:
    args = ["auth", "can-i", verb, resource, "--as", user]
    args += ["-n", namespace] if namespace else []
    args += [f"--subresource={subresource}"] if subresource else []
    r = kubectl(*args)
    assert r.stdout.strip() in ("yes", "no"), r
    return r.stdout.strip() == "yes"


def test_webhook_service_account_can_do_what_it_needs_and_nothing_broader(release: Release) -> None:
    sa, ns, secret = release.webhook_sa, release.namespace, f"{release.webhook}-tls"
    elsewhere = f"{release.name}-elsewhere"
    needs = [
        ("list", f"codeinterpreters.{GROUP}", elsewhere),
        ("watch", f"agentruntimes.{GROUP}", elsewhere),
        ("get", f"agentruntimes.{GROUP}", elsewhere),
        ("list", f"agentgrouppolicies.{GROUP}", None),
        ("watch", "namespaces", None),
        ("get", f"secrets/{secret}", ns),
        ("update", f"secrets/{secret}", ns),
        ("get", f"validatingwebhookconfigurations/{release.webhook}", None),
        ("patch", f"validatingwebhookconfigurations/{release.webhook}", None),
    ]
    broader = [
        ("get", "secrets", "kube-system"),
        ("get", f"secrets/{secret}", "kube-system"),
        ("list", "secrets", elsewhere),
        ("list", "secrets", ns),
        ("get", "secrets/another", ns),
        ("create", "secrets", ns),
        ("delete", f"secrets/{secret}", ns),
        ("patch", "validatingwebhookconfigurations/someone-elses", None),
        ("list", "validatingwebhookconfigurations", None),
        ("delete", f"validatingwebhookconfigurations/{release.webhook}", None),
        ("patch", "mutatingwebhookconfigurations", None),
        ("get", f"agentgroups.{GROUP}", elsewhere),
        ("delete", f"agentgroups.{GROUP}", elsewhere),
        ("create", f"codeinterpreters.{GROUP}", elsewhere),
        ("list", "pods", ns),
        ("*", "*", None),
    ]
    assert [n for n in needs if not can_i(sa, n[0], n[1], namespace=n[2])] == []
    assert [b for b in broader if can_i(sa, b[0], b[1], namespace=b[2])] == []


def test_webhook_may_watch_its_configuration_by_name_only(release: Release) -> None:
    # RBAC checks a list or watch with a metadata.name field selector against resourceNames: what the
    # rotator's watch does. Without the selector the same list is refused.
    args = ("get", "validatingwebhookconfigurations", "--as", release.webhook_sa, "-o", "name")
    r = kubectl(*args, f"--field-selector=metadata.name={release.webhook}")
    assert r.ok, r
    assert (
        r.stdout.strip() == f"validatingwebhookconfiguration.admissionregistration.k8s.io/{release.webhook}"
    )
    r = kubectl(*args)
    assert not r.ok
    assert "Forbidden" in r.stderr, r


def test_controller_service_account_can_do_what_it_needs_and_nothing_broader(release: Release) -> None:
    sa, ns = release.controller_sa, release.namespace
    elsewhere = f"{release.name}-elsewhere"
    needs: list[tuple[str, str, str | None, str]] = [
        ("watch", f"agentgroups.{GROUP}", elsewhere, ""),
        ("patch", f"agentgroups.{GROUP}", elsewhere, ""),  # the RetrySubAgent retry-count annotation
        ("patch", f"agentgroups.{GROUP}", elsewhere, "status"),
        ("update", f"agentgroups.{GROUP}", elsewhere, "finalizers"),
        ("list", f"codeinterpreters.{GROUP}", elsewhere, ""),
        ("get", f"agentruntimes.{GROUP}", elsewhere, ""),
        ("watch", f"agentgrouppolicies.{GROUP}", None, ""),
        ("patch", f"agentgrouppolicies.{GROUP}", None, "status"),
        ("create", "sandboxes.agents.x-k8s.io", elsewhere, ""),
        ("patch", "sandboxes.agents.x-k8s.io", elsewhere, ""),
        ("delete", "sandboxes.agents.x-k8s.io", elsewhere, ""),
        ("create", "sandboxclaims.extensions.agents.x-k8s.io", elsewhere, ""),
        ("delete", "sandboxclaims.extensions.agents.x-k8s.io", elsewhere, ""),
        ("create", "events", elsewhere, ""),
        ("list", "namespaces", None, ""),
        ("create", "leases.coordination.k8s.io", ns, ""),
        ("update", "leases.coordination.k8s.io/agentgroup-controller", ns, ""),
    ]
    broader: list[tuple[str, str, str | None, str]] = [
        ("delete", f"agentgroups.{GROUP}", elsewhere, ""),
        ("create", f"agentgroups.{GROUP}", elsewhere, ""),
        ("update", f"agentgroups.{GROUP}", elsewhere, ""),
        ("delete", f"agentgrouppolicies.{GROUP}", None, ""),
        ("update", f"codeinterpreters.{GROUP}", elsewhere, ""),
        ("get", "secrets", ns, ""),
        ("get", "secrets", "kube-system", ""),
        ("list", "secrets", elsewhere, ""),
        ("update", "leases.coordination.k8s.io/another-lease", ns, ""),
        ("create", "leases.coordination.k8s.io", elsewhere, ""),
        ("create", "pods", elsewhere, ""),
        ("update", "sandboxes.agents.x-k8s.io", elsewhere, ""),
        ("*", "*", None, ""),
    ]
    assert [n for n in needs if not can_i(sa, n[0], n[1], namespace=n[2], subresource=n[3])] == []
    assert [b for b in broader if can_i(sa, b[0], b[1], namespace=b[2], subresource=b[3])] == []


def test_a_dead_webhook_refuses_agentgroups_only_and_never_in_excluded_namespaces(release: Release) -> None:
    """No webhook pod runs here: what the API server does is what it would do with every replica down."""
    plain = f"{release.name}-plain-{uuid.uuid4().hex[:6]}"
    create_namespace(plain)
    try:
        r = kubectl("create", "--dry-run=server", "-n", plain, "-f", "-", input=group_yaml("refused"))
        assert not r.ok
        assert f'failed calling webhook "{HOOK_NAME}"' in r.stderr, r
        assert f"{release.webhook}.{release.namespace}.svc" in r.stderr, r
        # Everything else in that namespace is untouched.
        r = kubectl("create", "configmap", "unaffected", "-n", plain, "--dry-run=server")
        assert r.ok, r
        # The release namespace and kube-system are never sent to the webhook.
        for ns in (release.namespace, "kube-system"):
            r = kubectl("create", "--dry-run=server", "-n", ns, "-f", "-", input=group_yaml("admitted"))
            assert r.ok, r
            assert "created (server dry run)" in r.stdout
    finally:
        kubectl("delete", "namespace", plain, "--wait=false")


# ----------------------------------------------------------------------------------------- upgrade


def _ca_bundle(name: str) -> bytes:
    config = get_json("validatingwebhookconfiguration", name)
    assert config is not None
    return base64.b64decode(config["webhooks"][0]["clientConfig"].get("caBundle", ""))


def _patch_webhook_config(name: str, json_patch: list[dict[str, Any]]) -> None:
    kubectl(
        "patch",
        "validatingwebhookconfiguration",
        name,
        "--type=json",
        "-p",
        json.dumps(json_patch),
        check=True,
    )


def _upgrade(helm: Helm, rel: Release, value: str) -> None:
    """``helm upgrade`` keeping the release's values, with one more ``--set``."""
    helm.run(
        "upgrade", rel.name, str(CHART), "-n", rel.namespace, "--reuse-values", "--set", value, check=True
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_upgrade_keeps_a_ca_bundle_that_matches_the_serving_certificate(
    install: Callable[..., Release], helm: Helm
) -> None:
    rel = install("agentgroup-upgrade")
    names = service_dns_names(rel.webhook, rel.namespace)
    old_ca = pki.new_ca("old webhook CA", valid_for=VALIDITY)
    serving = pki.new_serving_cert(old_ca, names, valid_for=VALIDITY)
    secret_name = f"{rel.webhook}-tls"

    # Play the rotator's part (no pod runs here): certificates into the chart's Secret, the CA into the
    # webhook configuration.
    secret = get_json("secret", secret_name, rel.namespace)
    assert secret is not None
    assert secret["metadata"]["annotations"][ANNOTATION_MANAGED_BY] == MANAGED_BY
    data = {
        "tls.crt": _b64(serving.cert_pem),
        "tls.key": _b64(serving.key_pem),
        "ca.crt": _b64(old_ca.cert_pem),
    }
    kubectl(
        "patch",
        "secret",
        secret_name,
        "-n",
        rel.namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": data}),
        check=True,
    )
    patch = [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": _b64(old_ca.cert_pem)}]
    _patch_webhook_config(rel.webhook, patch)

    _upgrade(helm, rel, "logging.level=debug")
    deployment = get_json("deployment", rel.webhook, rel.namespace)
    assert deployment is not None
    assert "--log-level=debug" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]  # it ran
    assert _ca_bundle(rel.webhook) == old_ca.cert_pem
    after = get_json("secret", secret_name, rel.namespace)
    assert after is not None
    assert after["data"] == data  # the upgrade left the certificates alone

    # A CA rotation under way: the rotator has put a new CA in front of the Secret's bundle, and the
    # configuration has lost its caBundle (say, to a tool that re-applied it). The upgrade restores the
    # Secret's bundle, which trusts what the pods serve.
    new_ca = pki.new_ca("new webhook CA", valid_for=VALIDITY)
    bundle = new_ca.cert_pem + old_ca.cert_pem
    kubectl(
        *("patch", "secret", secret_name, "-n", rel.namespace, "--type=merge"),
        *("-p", json.dumps({"data": {"ca.crt": _b64(bundle)}})),
        check=True,
    )
    remove = [{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]
    _patch_webhook_config(rel.webhook, remove)
    assert _ca_bundle(rel.webhook) == b""

    _upgrade(helm, rel, "logging.level=info")
    ca_bundle = _ca_bundle(rel.webhook)
    assert ca_bundle == bundle
    problems = check_pair(
        serving.cert_pem, serving.key_pem, now=datetime.now(UTC), ca_pem=ca_bundle, dns_names=names
    )
    assert [p for p in problems if p.severity == "error"] == []

    # And the configuration still leads to the webhook's Service and port.
    config = get_json("validatingwebhookconfiguration", rel.webhook)
    assert config is not None
    _assert_points_at_the_webhook(rel, config["webhooks"][0])


# --------------------------------------------------------------------------------------- uninstall


@dataclass
class Watch:
    """`kubectl get -w` of one resource type, recording (event type, name, resourceVersion)."""

    proc: subprocess.Popen[str]
    events: list[tuple[str, str, int]] = field(default_factory=list)
    thread: threading.Thread | None = None

    @classmethod
    def start(cls, cluster: LocalControlPlane, resource: str, *args: str) -> Watch:
        template = '{.type} {.object.metadata.name} {.object.metadata.resourceVersion}{"\\n"}'
        proc = subprocess.Popen(
            [
                *(str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", "get", resource, *args),
                *("--watch", "--output-watch-events", "-o", f"jsonpath={template}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        watch = cls(proc)
        watch.thread = threading.Thread(target=watch._read, daemon=True)
        watch.thread.start()
        return watch

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, name, rv = line.split()
            self.events.append((kind, name, int(rv)))

    def deleted(self) -> list[tuple[str, int]]:
        return [(name, rv) for kind, name, rv in list(self.events) if kind == "DELETED"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.thread is not None:
            self.thread.join(timeout=10)


def test_uninstall_removes_the_webhook_configuration_before_its_service_and_pods(
    cluster: LocalControlPlane, install: Callable[..., Release], release: Release, helm: Helm
) -> None:
    rel = install("agentgroup-uninstall")
    # `release` (another install) never sends its own namespace to its webhook: there, only this
    # release's webhook judges AgentGroups.
    probe = release.namespace
    r = kubectl("create", "--dry-run=server", "-n", probe, "-f", "-", input=group_yaml("before"))
    assert not r.ok
    assert f"{rel.webhook}.{rel.namespace}.svc" in r.stderr, r

    watches = {
        "config": Watch.start(
            cluster, "validatingwebhookconfigurations", f"--field-selector=metadata.name={rel.webhook}"
        ),
        "services": Watch.start(cluster, "services", "-n", rel.namespace),
        "deployments": Watch.start(cluster, "deployments", "-n", rel.namespace),
    }
    try:
        # A watch lists first (ADDED events), then follows from that list's resourceVersion: once the
        # objects are listed, no later event can be missed.
        wait_for(lambda: len(watches["config"].events) >= 1, 30, "the webhook configuration watch to list it")
        wait_for(lambda: len(watches["services"].events) >= 3, 30, "the Service watch to list the Services")
        wait_for(lambda: len(watches["deployments"].events) >= 2, 30, "the Deployment watch to list them")

        helm.run("uninstall", rel.name, "-n", rel.namespace, check=True)

        wait_for(lambda: len(watches["services"].deleted()) == 3, 30, "the Services' DELETED events")
        wait_for(lambda: len(watches["deployments"].deleted()) == 2, 30, "the Deployments' DELETED events")
        wait_for(lambda: len(watches["config"].deleted()) >= 1, 30, "the configuration's DELETED event")
    finally:
        for w in watches.values():
            w.stop()

    # resourceVersions of one etcd are its global revision counter: a smaller one happened earlier. (The
    # API treats them as opaque; here we own the etcd behind the API server.)
    last_config_delete = max(rv for _, rv in watches["config"].deleted())
    first_other_delete = min(rv for w in ("services", "deployments") for _, rv in watches[w].deleted())
    assert last_config_delete < first_other_delete, {k: w.events for k, w in watches.items()}

    assert get_json("validatingwebhookconfiguration", rel.webhook) is None
    selector = f"app.kubernetes.io/instance={rel.name}"
    r = kubectl(
        "get",
        "clusterroles,clusterrolebindings,validatingwebhookconfigurations",
        "-l",
        selector,
        "-o",
        "name",
    )
    assert r.ok, r
    assert r.stdout.strip() == ""
    # Helm deletes the namespaced objects; the garbage collector then removes the ReplicaSets and Pods.
    kinds = "all,secrets,serviceaccounts,roles,rolebindings,poddisruptionbudgets"

    def left() -> list[str]:
        r = kubectl("get", kinds, "-n", rel.namespace, "-l", selector, "-o", "name")
        assert r.ok, r
        return r.stdout.split()

    wait_for(lambda: left() == [] or None, 60, f"nothing of release {rel.name} left in {rel.namespace}")
    # No webhook configuration is left pointing at nothing: AgentGroups are admitted again.
    r = kubectl("create", "--dry-run=server", "-n", probe, "-f", "-", input=group_yaml("after"))
    assert r.ok, r
