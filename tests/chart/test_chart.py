"""The Helm chart, rendered by the real helm: lint, safety defaults, certificate modes, least-privilege
RBAC, the restricted security context, values validation and names.

What only a real API server can tell (server-side dry run, Pod Security admission, `kubectl auth can-i`,
install, upgrade, uninstall) is in tests/e2e/test_chart.py.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentgroup import cli
from certs.cli import add_rotator_arguments, rotator_settings
from certs.rotation import ANNOTATION_MANAGED_BY, MANAGED_BY
from certs.rotator import CAINJECTOR_ANNOTATION, MODES
from tests.chart.helm import CHART, NAMESPACE, RELEASE, Helm, find, is_hook, one
from webhook.app import VALIDATE_PATH

WEBHOOK = f"{RELEASE}-webhook"
CONTROLLER = f"{RELEASE}-controller"
HOOK_NAME = "validate.agentgroups.runtime.agentcube.volcano.sh"
GROUP = "runtime.agentcube.volcano.sh"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n"

MODE_VALUES: dict[str, dict[str, Any]] = {
    "selfManaged": {},
    "certManager": {"certificates": {"mode": "certManager"}},
    "secret": {"certificates": {"mode": "secret", "secretName": "my-webhook-tls", "caBundle": CA_PEM}},
}


@pytest.fixture(scope="module")
def default(helm: Helm) -> list[dict[str, Any]]:
    return helm.template()


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def flags(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's ``--name=value`` flags (``--name`` alone maps to "")."""
    out = {}
    for arg in container(deployment)["args"][1:]:
        name, _, value = arg.partition("=")
        out[name] = value
    return out


def webhook_entry(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config = one(objects, "ValidatingWebhookConfiguration")
    assert len(config["webhooks"]) == 1
    hook: dict[str, Any] = config["webhooks"][0]
    return hook


# ------------------------------------------------------------------------------------------ lint


@pytest.mark.parametrize("mode", sorted(MODE_VALUES))
def test_lint_strict_passes_for_every_certificate_mode(helm: Helm, mode: str) -> None:
    path = helm.home / f"lint-{mode}.yaml"
    path.write_text(yaml.safe_dump(MODE_VALUES[mode]))
    r = helm.run("lint", "--strict", str(CHART), "-f", str(path))
    assert r.ok, r
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout


# ----------------------------------------------------------------------------- what is installed


def test_default_install_has_every_part_and_nothing_else(default: list[dict[str, Any]]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in default if not is_hook(o))
    assert kinds == sorted(
        [
            ("ServiceAccount", WEBHOOK),
            ("ServiceAccount", CONTROLLER),
            ("ClusterRole", WEBHOOK),
            ("ClusterRole", CONTROLLER),
            ("ClusterRoleBinding", WEBHOOK),
            ("ClusterRoleBinding", CONTROLLER),
            ("Role", WEBHOOK),
            ("Role", CONTROLLER),
            ("RoleBinding", WEBHOOK),
            ("RoleBinding", CONTROLLER),
            ("Secret", f"{WEBHOOK}-tls"),
            ("Service", WEBHOOK),
            ("Service", f"{WEBHOOK}-metrics"),
            ("Service", f"{CONTROLLER}-metrics"),
            ("Deployment", WEBHOOK),
            ("Deployment", CONTROLLER),
            ("PodDisruptionBudget", WEBHOOK),
            ("PodDisruptionBudget", CONTROLLER),
            ("ValidatingWebhookConfiguration", WEBHOOK),
        ]
    )
    # Everything namespaced lands in the release namespace.
    for o in default:
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration"):
            assert o["metadata"]["namespace"] == NAMESPACE, o["metadata"]


def test_crds_ship_in_the_crds_folder(helm: Helm) -> None:
    crds = [o for o in helm.template("--include-crds") if o["kind"] == "CustomResourceDefinition"]
    assert f"agentgroups.{GROUP}" in [c["metadata"]["name"] for c in crds]


# ------------------------------------------------------------------------- webhook configuration


def test_webhook_configuration_safety_defaults(default: list[dict[str, Any]]) -> None:
    hook = webhook_entry(default)
    assert hook["name"] == HOOK_NAME
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 5
    assert hook["sideEffects"] == "None"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["admissionReviewVersions"] == ["v1"]
    # AgentGroups only, creates and updates only: no other resource can be blocked by this webhook.
    assert hook["rules"] == [
        {
            "apiGroups": [GROUP],
            "apiVersions": ["v1alpha1"],
            "resources": ["agentgroups"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE, "kube-system"]}
        ]
    }
    assert "objectSelector" not in hook
    assert "matchConditions" not in hook
    # helm template has no cluster to look the caBundle up in: the rotator injects it.
    assert "caBundle" not in hook["clientConfig"]


def test_webhook_configuration_points_at_the_webhook_service_and_port(default: list[dict[str, Any]]) -> None:
    ref = webhook_entry(default)["clientConfig"]["service"]
    assert ref == {"name": WEBHOOK, "namespace": NAMESPACE, "path": VALIDATE_PATH, "port": 443}
    service = one(default, "Service", WEBHOOK)
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
    deployment = one(default, "Deployment", WEBHOOK)
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert port["targetPort"] == "webhook"
    assert flags(deployment)["--webhook-bind-address"] == f":{ports['webhook']}"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_webhook_configuration_options(helm: Helm) -> None:
    objects = helm.template(
        values={
            "webhook": {
                "failurePolicy": "Ignore",
                "timeoutSeconds": 3,
                "excludeNamespaces": ["gitops", "kube-system"],
                "namespaceSelector": {
                    "matchLabels": {"agentcube.io/enabled": "true"},
                    "matchExpressions": [{"key": "tier", "operator": "Exists"}],
                },
                "objectSelector": {"matchLabels": {"validate": "yes"}},
                "matchConditions": [{"name": "not-bot", "expression": "request.userInfo.username != 'bot'"}],
            }
        }
    )
    hook = webhook_entry(objects)
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == 3
    assert hook["namespaceSelector"] == {
        "matchLabels": {"agentcube.io/enabled": "true"},
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": [NAMESPACE, "kube-system", "gitops"],
            },
            {"key": "tier", "operator": "Exists"},
        ],
    }
    assert hook["objectSelector"] == {"matchLabels": {"validate": "yes"}}
    assert hook["matchConditions"] == [
        {"name": "not-bot", "expression": "request.userInfo.username != 'bot'"}
    ]


def test_uninstall_hook_removes_the_webhook_configuration_first(default: list[dict[str, Any]]) -> None:
    (hook,) = [o for o in find(default, "ValidatingWebhookConfiguration") if is_hook(o)]
    live = one(default, "ValidatingWebhookConfiguration")
    # The same name: Helm's before-hook-creation policy deletes the live configuration, waits until it
    # is gone, creates this empty one and deletes it again, all before it deletes anything else.
    assert hook["metadata"]["name"] == live["metadata"]["name"]
    assert hook["metadata"]["annotations"] == {
        "helm.sh/hook": "pre-delete",
        "helm.sh/hook-weight": "-100",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded,hook-failed",
    }
    assert not hook.get("webhooks")
    # The only hook: nothing that needs a Pod (a Job) runs on install, upgrade or uninstall.
    assert [o["kind"] for o in default if is_hook(o)] == ["ValidatingWebhookConfiguration"]


# ---------------------------------------------------------------------------- high availability


def test_webhook_runs_three_replicas_spread_across_nodes_with_a_pdb(default: list[dict[str, Any]]) -> None:
    deployment = one(default, "Deployment", WEBHOOK)
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    selector = spec["selector"]["matchLabels"]
    by_key = {c["topologyKey"]: c for c in spec["template"]["spec"]["topologySpreadConstraints"]}
    node = by_key["kubernetes.io/hostname"]
    assert node["maxSkew"] == 1
    assert node["whenUnsatisfiable"] == "DoNotSchedule"
    assert node["nodeTaintsPolicy"] == "Honor"
    assert node["labelSelector"] == {"matchLabels": selector}
    assert by_key["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"

    pdb = one(default, "PodDisruptionBudget", WEBHOOK)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"] == {"matchLabels": selector}
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_readiness_is_gated_on_readyz_and_pods_drain_before_stopping(default: list[dict[str, Any]]) -> None:
    c = container(one(default, "Deployment", WEBHOOK))
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"webhook": 9443, "metrics": 8080, "health": 8081}


def test_controller_runs_two_replicas_with_leader_election(default: list[dict[str, Any]]) -> None:
    deployment = one(default, "Deployment", CONTROLLER)
    assert deployment["spec"]["replicas"] == 2
    assert container(deployment)["args"][0] == "controller"
    assert flags(deployment) == {
        "--leader-elect": "",
        "--leader-election-namespace": NAMESPACE,
        "--leader-election-id": "agentgroup-controller",
        "--max-concurrent-reconciles": "16",
        "--sandbox-api-version": "auto",
        "--metrics-bind-address": ":8080",
        "--health-probe-bind-address": ":8081",
        "--log-level": "info",
        "--log-format": "json",
    }
    assert one(default, "PodDisruptionBudget", CONTROLLER)["spec"]["maxUnavailable"] == 1


def test_pod_placement_values_reach_both_deployments(helm: Helm) -> None:
    placement = {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "platform"},
    }
    objects = helm.template(
        values={
            "webhook": placement,
            "controller": placement,
            "image": {"repository": "registry.example/agentgroup", "tag": "1.2.3"},
            "logging": {"level": "debug", "format": "text"},
            "imagePullSecrets": [{"name": "regcred"}],
        }
    )
    for name in (WEBHOOK, CONTROLLER):
        d = one(objects, "Deployment", name)
        pod = d["spec"]["template"]["spec"]
        assert pod["affinity"] == placement["affinity"]
        assert pod["nodeSelector"] == placement["nodeSelector"]
        assert pod["tolerations"] == placement["tolerations"]
        assert pod["priorityClassName"] == "system-cluster-critical"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert container(d)["resources"] == placement["resources"]
        assert container(d)["image"] == "registry.example/agentgroup:1.2.3"
        assert d["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}
        assert d["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
        assert flags(d)["--log-level"] == "debug"
        assert flags(d)["--log-format"] == "text"


def test_image_defaults_to_the_app_version_and_a_digest_pins_it(helm: Helm) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    images = {container(d)["image"] for d in find(helm.template(), "Deployment")}
    assert images == {f"ghcr.io/volcano-sh/agentgroup:{chart['appVersion']}"}
    digest = "sha256:" + "a" * 64
    pinned = helm.template("--set", f"image.digest={digest}", "--set", "image.tag=ignored")
    assert {container(d)["image"] for d in find(pinned, "Deployment")} == {
        f"ghcr.io/volcano-sh/agentgroup@{digest}"
    }


# ------------------------------------------------------------------------ Pod Security restricted


@pytest.mark.parametrize("mode", sorted(MODE_VALUES))
def test_pods_meet_the_restricted_pod_security_level(helm: Helm, mode: str) -> None:
    for d in find(helm.template(values=MODE_VALUES[mode]), "Deployment"):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for key in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
            assert key not in pod
        c = container(d)
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert all("hostPort" not in p for p in c["ports"])
        # Only emptyDir and Secret volumes (no hostPath); /tmp is the one writable place.
        assert all(set(v) - {"name"} <= {"emptyDir", "secret"} for v in pod["volumes"])
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts["/tmp"] == "tmp"
        assert pod["automountServiceAccountToken"] is True


def test_security_context_can_leave_ids_to_the_platform(helm: Helm) -> None:
    objects = helm.template(
        values={"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}
    )
    for d in find(objects, "Deployment"):
        assert d["spec"]["template"]["spec"]["securityContext"] == {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }


# ------------------------------------------------------------------ flags the processes accept


def test_controller_accepts_every_flag_the_chart_passes(default: list[dict[str, Any]]) -> None:
    args = cli.parser().parse_args(container(one(default, "Deployment", CONTROLLER))["args"])
    assert args.leader_elect is True
    assert args.leader_election_namespace == NAMESPACE
    assert args.leader_election_id == "agentgroup-controller"
    assert args.max_concurrent_reconciles == 16
    assert args.sandbox_api_version == "auto"
    assert (args.metrics_bind_address, args.health_probe_bind_address) == (":8080", ":8081")


def _rotator_flags(args: list[str]) -> list[str]:
    rotator = argparse.ArgumentParser()
    add_rotator_arguments(rotator)
    names = {s for a in rotator._actions for s in a.option_strings}
    return [a for a in args if a.partition("=")[0] in names]


@pytest.mark.parametrize("mode", sorted(MODE_VALUES))
def test_webhook_accepts_every_flag_the_chart_passes(helm: Helm, mode: str) -> None:
    args = container(one(helm.template(values=MODE_VALUES[mode]), "Deployment", WEBHOOK))["args"]
    # `agentgroup webhook` takes the certificate flags of certs/cli.py (add_rotator_arguments); any flag
    # it does not know must be one of those.
    _, unknown = cli.parser().parse_known_args(args)
    assert set(unknown) <= set(_rotator_flags(args))
    parsed = webhook_cli_args(args)
    assert parsed.webhook_bind_address == ":9443"
    assert str(parsed.cert_dir) == "/tmp/k8s-webhook-server/serving-certs"


def webhook_cli_args(args: list[str]) -> argparse.Namespace:
    """The webhook's own flags, parsed by `agentgroup webhook`'s parser."""
    rotator = set(_rotator_flags(args))
    return cli.parser().parse_args([a for a in args if a not in rotator])


@pytest.mark.parametrize("cluster_domain", ["cluster.local", "corp.internal"])
def test_self_managed_flags_give_the_rotator_the_chart_s_names(helm: Helm, cluster_domain: str) -> None:
    objects = helm.template(values={"clusterDomain": cluster_domain})
    args = container(one(objects, "Deployment", WEBHOOK))["args"]
    parser = argparse.ArgumentParser()
    add_rotator_arguments(parser)
    cert_dir = Path("/tmp/k8s-webhook-server/serving-certs")
    settings = rotator_settings(parser.parse_args(_rotator_flags(args)), cert_dir)
    assert settings.mode == "self-managed"
    assert (settings.secret_namespace, settings.secret_name) == (
        NAMESPACE,
        one(objects, "Secret")["metadata"]["name"],
    )
    assert settings.webhook_config_name == one(objects, "ValidatingWebhookConfiguration")["metadata"]["name"]
    service = webhook_entry(objects)["clientConfig"]["service"]
    # The certificate names what the API server dials: <service>.<namespace>.svc.
    assert f"{service['name']}.{service['namespace']}.svc" in settings.dns_names
    assert f"{WEBHOOK}.{NAMESPACE}.svc.{cluster_domain}" in settings.dns_names


# ---------------------------------------------------------------------------------- certificates


@pytest.mark.parametrize("mode", sorted(MODE_VALUES))
def test_certificate_modes_are_the_rotators(helm: Helm, mode: str) -> None:
    assert flags(one(helm.template(values=MODE_VALUES[mode]), "Deployment", WEBHOOK))["--cert-mode"] in MODES


def test_self_managed_mode(default: list[dict[str, Any]]) -> None:
    secret = one(default, "Secret")
    name = secret["metadata"]["name"]
    # Created empty and marked as the rotator's: it fills it; helm upgrade never overwrites its data.
    assert secret["metadata"]["annotations"] == {ANNOTATION_MANAGED_BY: MANAGED_BY}
    assert "data" not in secret
    assert "stringData" not in secret
    deployment = one(default, "Deployment", WEBHOOK)
    f = flags(deployment)
    assert {k: v for k, v in f.items() if k.startswith(("--cert", "--webhook-config", "--service"))} == {
        "--cert-dir": "/tmp/k8s-webhook-server/serving-certs",
        "--cert-mode": "self-managed",
        "--cert-secret": name,
        "--cert-namespace": NAMESPACE,
        "--webhook-config": WEBHOOK,
        "--service-name": WEBHOOK,
        "--service-namespace": NAMESPACE,
    }
    # The rotator writes the files into the cert dir, inside the writable /tmp emptyDir.
    assert [v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    assert f["--cert-dir"].startswith("/tmp/")
    assert CAINJECTOR_ANNOTATION not in (
        one(default, "ValidatingWebhookConfiguration")["metadata"].get("annotations") or {}
    )


def test_cert_manager_mode(helm: Helm) -> None:
    objects = helm.template(values=MODE_VALUES["certManager"])
    serving = one(objects, "Certificate", f"{WEBHOOK}-serving")
    secret_name = serving["spec"]["secretName"]
    assert serving["spec"]["dnsNames"] == [
        f"{WEBHOOK}.{NAMESPACE}.svc",
        f"{WEBHOOK}.{NAMESPACE}.svc.cluster.local",
    ]
    assert serving["spec"]["usages"] == ["server auth", "digital signature"]
    # A self-signed CA chain of the chart's own: the CA issuer puts ca.crt into the serving Secret.
    assert serving["spec"]["issuerRef"] == {
        "name": f"{WEBHOOK}-ca",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    ca = one(objects, "Certificate", f"{WEBHOOK}-ca")
    assert ca["spec"]["isCA"] is True
    assert one(objects, "Issuer", f"{WEBHOOK}-ca")["spec"] == {"ca": {"secretName": ca["spec"]["secretName"]}}
    assert one(objects, "Issuer", f"{WEBHOOK}-selfsigned")["spec"] == {"selfSigned": {}}

    config = one(objects, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"] == {CAINJECTOR_ANNOTATION: f"{NAMESPACE}/{WEBHOOK}-serving"}
    deployment = one(objects, "Deployment", WEBHOOK)
    assert flags(deployment)["--cert-mode"] == "cert-manager"
    assert "--cert-secret" not in flags(deployment)
    volume = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}["serving-certs"]
    assert volume["secret"]["secretName"] == secret_name
    mount = {m["name"]: m for m in container(deployment)["volumeMounts"]}["serving-certs"]
    assert mount == {
        "name": "serving-certs",
        "mountPath": "/tmp/k8s-webhook-server/serving-certs",
        "readOnly": True,
    }
    assert not find(objects, "Secret")


def test_cert_manager_mode_with_an_existing_issuer(helm: Helm) -> None:
    ref = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    objects = helm.template(
        values={"certificates": {"mode": "certManager", "certManager": {"issuerRef": ref}}}
    )
    assert [o["metadata"]["name"] for o in find(objects, "Certificate")] == [f"{WEBHOOK}-serving"]
    assert not find(objects, "Issuer")
    assert one(objects, "Certificate")["spec"]["issuerRef"] == ref


def test_secret_mode(helm: Helm) -> None:
    objects = helm.template(values=MODE_VALUES["secret"])
    hook = webhook_entry(objects)
    assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode() == CA_PEM
    deployment = one(objects, "Deployment", WEBHOOK)
    assert flags(deployment)["--cert-mode"] == "secret"
    volume = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}["serving-certs"]
    assert volume["secret"]["secretName"] == "my-webhook-tls"
    assert not find(objects, "Secret")
    assert not find(objects, "Certificate")


# ------------------------------------------------------------------------------------------ RBAC


def rules(objects: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    r: list[dict[str, Any]] = one(objects, kind, name)["rules"]
    return r


@pytest.mark.parametrize("mode", sorted(MODE_VALUES))
def test_no_rbac_wildcards(helm: Helm, mode: str) -> None:
    objects = helm.template(values=MODE_VALUES[mode])
    for role in find(objects, "ClusterRole") + find(objects, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule


def test_webhook_rbac_is_exactly_what_it_uses(default: list[dict[str, Any]]) -> None:
    assert rules(default, "ClusterRole", WEBHOOK) == [
        {
            "apiGroups": [GROUP],
            "resources": ["codeinterpreters", "agentruntimes", "agentgrouppolicies"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": [WEBHOOK],
            "verbs": ["get", "list", "watch", "patch"],
        },
    ]
    assert rules(default, "Role", WEBHOOK) == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"{WEBHOOK}-tls"],
            "verbs": ["get", "update"],
        }
    ]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = one(default, kind, WEBHOOK)
        assert binding["roleRef"]["name"] == WEBHOOK
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": WEBHOOK, "namespace": NAMESPACE}]


@pytest.mark.parametrize("mode", ["certManager", "secret"])
def test_webhook_with_external_certificates_touches_no_secret_and_no_configuration(
    helm: Helm, mode: str
) -> None:
    objects = helm.template(values=MODE_VALUES[mode])
    assert [r["resources"] for r in rules(objects, "ClusterRole", WEBHOOK)] == [
        ["codeinterpreters", "agentruntimes", "agentgrouppolicies"],
        ["namespaces"],
    ]
    assert not [r for r in find(objects, "Role") if r["metadata"]["name"] == WEBHOOK]
    assert not [r for r in find(objects, "RoleBinding") if r["metadata"]["name"] == WEBHOOK]


def test_controller_rbac_is_exactly_what_it_uses(default: list[dict[str, Any]]) -> None:
    granted = {
        (group, resource): sorted(rule["verbs"])
        for rule in rules(default, "ClusterRole", CONTROLLER)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        (GROUP, "agentgroups"): ["get", "list", "patch", "watch"],
        (GROUP, "agentgroups/status"): ["get", "patch", "update"],
        (GROUP, "agentgroups/finalizers"): ["update"],
        (GROUP, "codeinterpreters"): ["get", "list", "watch"],
        (GROUP, "agentruntimes"): ["get", "list", "watch"],
        (GROUP, "agentgrouppolicies"): ["get", "list", "watch"],
        (GROUP, "agentgrouppolicies/status"): ["patch"],
        ("agents.x-k8s.io", "sandboxes"): ["create", "delete", "get", "list", "patch", "watch"],
        ("extensions.agents.x-k8s.io", "sandboxclaims"): ["create", "delete", "get", "list", "watch"],
        ("", "events"): ["create", "patch"],
        ("", "namespaces"): ["get", "list", "watch"],
    }
    assert rules(default, "Role", CONTROLLER) == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["agentgroup-controller"],
            "verbs": ["get", "update"],
        },
    ]


def test_service_accounts_do_not_mount_tokens_everywhere(default: list[dict[str, Any]]) -> None:
    for sa in find(default, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    names = {d["spec"]["template"]["spec"]["serviceAccountName"] for d in find(default, "Deployment")}
    assert names == {WEBHOOK, CONTROLLER}


# --------------------------------------------------------------------------------------- metrics


def test_metrics_services_select_their_pods(default: list[dict[str, Any]]) -> None:
    for name in (WEBHOOK, CONTROLLER):
        service = one(default, "Service", f"{name}-metrics")
        labels = one(default, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
        ]
    assert not find(default, "ServiceMonitor")
    assert not find(default, "PrometheusRule")


def test_service_monitors_and_alert_rules(helm: Helm) -> None:
    objects = helm.template(
        values={
            "metrics": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "prometheusRule": {"enabled": True, "labels": {"release": "prom"}, "latencyP99Seconds": 0.5},
            }
        }
    )
    monitors = find(objects, "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == sorted([WEBHOOK, CONTROLLER])
    for m in monitors:
        assert m["metadata"]["labels"]["release"] == "prom"
        assert m["spec"]["endpoints"][0]["port"] == "metrics"
        service = one(objects, "Service", f"{m['metadata']['name']}-metrics")
        assert m["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    rule = one(objects, "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "AgentGroupWebhookErrors",
        "AgentGroupWebhookSlow",
        "AgentGroupWebhookRejectingMost",
        "AgentGroupWebhookDown",
    }
    assert f'name="{HOOK_NAME}"' in alerts["AgentGroupWebhookErrors"]["expr"]
    assert "calling_webhook_error" in alerts["AgentGroupWebhookErrors"]["expr"]
    assert alerts["AgentGroupWebhookSlow"]["expr"].strip().endswith("> 0.5")
    assert 'error_type="no_error"' in alerts["AgentGroupWebhookRejectingMost"]["expr"]
    assert f'job="{WEBHOOK}-metrics"' in alerts["AgentGroupWebhookDown"]["expr"]


def test_availability_alert_needs_the_service_monitor(helm: Helm) -> None:
    objects = helm.template(values={"metrics": {"prometheusRule": {"enabled": True}}})
    alerts = [r["alert"] for r in one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]]
    assert "AgentGroupWebhookDown" not in alerts
    assert "AgentGroupWebhookErrors" in alerts


# ---------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "webhook.failurePolicy=Maybe"],
            "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'",
        ),
        (["--set", "webhook.timeoutSeconds=60"], "at '/webhook/timeoutSeconds': maximum: got 60, want 30"),
        (["--set", "webhook.replicas=0"], "at '/webhook/replicas': minimum: got 0, want 1"),
        (["--set", "webhook.replcas=3"], "at '/webhook': additional properties 'replcas' not allowed"),
        (
            ["--set", "certificates.mode=vault"],
            "at '/certificates/mode': value must be one of 'selfManaged', 'certManager', 'secret'",
        ),
        (
            ["--set", "certificates.mode=secret"],
            "certificates.secretName is required when certificates.mode is secret",
        ),
        (
            [
                "--set",
                "certificates.mode=secret",
                "--set",
                "certificates.secretName=x",
                "--set",
                "certificates.caBundle=abc",
            ],
            "certificates.caBundle must be the PEM text of the CA",
        ),
        (
            ["--set", "logging.level=verbose"],
            "at '/logging/level': value must be one of 'debug', 'info', 'warning', 'error'",
        ),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy': value must be one of"),
        (["--set", "image.digest=sha256:abc"], "at '/image/digest'"),
        (
            ["--set", "controller.sandboxApiVersion=v2"],
            "at '/controller/sandboxApiVersion': value must be one of",
        ),
        (
            ["--set", "podSecurityContext.runAsNonRoot=false"],
            "at '/podSecurityContext/runAsNonRoot': value must be true",
        ),
        (
            ["--set", "podSecurityContext.runAsUser=0"],
            "at '/podSecurityContext/runAsUser': minimum: got 0, want 1",
        ),
        (["--set", "containerSecurityContext.allowPrivilegeEscalation=true"], "value must be false"),
        (
            ["--set", "containerSecurityContext.capabilities.add={NET_ADMIN}"],
            "at '/containerSecurityContext/capabilities/add'",
        ),
        (
            ["--set", "webhook.podDisruptionBudget.minAvailable=2"],
            "set exactly one of minAvailable and maxUnavailable",
        ),
        (["--set", "webhook.excludeNamespaces={Not_A_Name}"], "at '/webhook/excludeNamespaces/0'"),
        (["--set", "metrics.port=8081"], "at '/metrics/port'"),
    ],
)
def test_wrong_values_are_rejected_with_a_clear_message(helm: Helm, args: list[str], message: str) -> None:
    r = helm.run("template", RELEASE, str(CHART), "-n", NAMESPACE, *args)
    assert not r.ok, r
    assert message in r.stderr, r


def test_every_value_is_documented() -> None:
    """Every value in values.yaml has a "# --" comment right above it or above the value it belongs to."""
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    doc_above = False  # the comment block right above starts with "# --"
    in_comment = False
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        text = line.strip()
        if text.startswith("#"):
            if not in_comment:
                doc_above = text.startswith("# --")
            in_comment = True
            continue
        in_comment, documented_here = False, doc_above
        doc_above = False
        if not text or text.startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = documented_here or any(d for _, d in stack)
        _key, _, value = text.partition(":")
        if value.strip() and not documented:
            undocumented.append(f"values.yaml:{number}: {text}")
        stack.append((indent, documented))
    assert undocumented == []


def test_schema_knows_every_default_value(helm: Helm) -> None:
    # additionalProperties: false everywhere would reject the chart's own defaults if they drifted apart.
    assert helm.run("lint", "--strict", str(CHART)).ok


# ----------------------------------------------------------------------------------------- names


def test_names_stay_valid_for_long_release_names(helm: Helm) -> None:
    release = "a-long-release-name-for-a-platform-team-that-likes-it"  # Helm allows 53
    objects = helm.template(release=release)
    names = {o["metadata"]["name"] for o in objects}
    assert all(len(n) <= 63 and n[0].isalnum() and n[-1].isalnum() for n in names), names
    # The suffixes that tell the parts apart survive the truncation.
    assert {o["metadata"]["name"].rsplit("-", 1)[-1] for o in find(objects, "Deployment")} == {
        "webhook",
        "controller",
    }
    hook = webhook_entry(objects)
    assert (
        hook["clientConfig"]["service"]["name"]
        == one(objects, "Deployment", hook["clientConfig"]["service"]["name"])["metadata"]["name"]
    )


def test_release_name_containing_the_chart_name_is_used_as_is(helm: Helm) -> None:
    objects = helm.template(release="team-agentgroup")
    assert {d["metadata"]["name"] for d in find(objects, "Deployment")} == {
        "team-agentgroup-webhook",
        "team-agentgroup-controller",
    }
    other = helm.template(release="prod")
    assert {d["metadata"]["name"] for d in find(other, "Deployment")} == {
        "prod-agentgroup-webhook",
        "prod-agentgroup-controller",
    }
