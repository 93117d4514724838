"""REST paths and identities of the resources the project touches."""

from __future__ import annotations

import pytest

from shared.kube import resources as r
from shared.kube.resources import Resource


@pytest.mark.parametrize(
    ("res", "args", "path"),
    [
        (r.CONFIG_MAPS, {}, "/api/v1/configmaps"),
        (r.CONFIG_MAPS, {"namespace": "ns"}, "/api/v1/namespaces/ns/configmaps"),
        (r.SECRETS, {"namespace": "ns", "name": "s"}, "/api/v1/namespaces/ns/secrets/s"),
        (r.NAMESPACES, {"name": "team-a"}, "/api/v1/namespaces/team-a"),
        (r.NAMESPACES, {"namespace": "ignored", "name": "team-a"}, "/api/v1/namespaces/team-a"),
        (r.EVENTS, {"namespace": "ns"}, "/api/v1/namespaces/ns/events"),
        (
            r.AGENT_GROUPS,
            {"namespace": "ns", "name": "g", "subresource": "status"},
            "/apis/runtime.agentcube.volcano.sh/v1alpha1/namespaces/ns/agentgroups/g/status",
        ),
        (r.AGENT_GROUPS, {}, "/apis/runtime.agentcube.volcano.sh/v1alpha1/agentgroups"),
        (
            r.AGENT_GROUP_POLICIES,
            {"name": "p"},
            "/apis/runtime.agentcube.volcano.sh/v1alpha1/agentgrouppolicies/p",
        ),
        (r.SANDBOXES_V1ALPHA1, {"namespace": "ns"}, "/apis/agents.x-k8s.io/v1alpha1/namespaces/ns/sandboxes"),
        (
            r.SANDBOX_CLAIMS_V1BETA1,
            {"namespace": "ns", "name": "c"},
            "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/ns/sandboxclaims/c",
        ),
        (
            r.LEASES,
            {"namespace": "kube-system", "name": "l"},
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l",
        ),
        (
            r.VALIDATING_WEBHOOK_CONFIGURATIONS,
            {"name": "agentgroup"},
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/agentgroup",
        ),
        (r.CONFIG_MAPS, {"namespace": "ns", "name": "a/b?c"}, "/api/v1/namespaces/ns/configmaps/a%2Fb%3Fc"),
    ],
)
def test_paths(res: Resource, args: dict[str, str], path: str) -> None:
    assert res.path(**args) == path


def test_a_subresource_needs_a_name() -> None:
    with pytest.raises(ValueError, match="needs an object name"):
        r.AGENT_GROUPS.path("ns", subresource="status")


def test_identities() -> None:
    assert r.AGENT_GROUPS.api_version == "runtime.agentcube.volcano.sh/v1alpha1"
    assert (r.AGENT_GROUPS.kind, r.AGENT_GROUPS.namespaced) == ("AgentGroup", True)
    assert (r.AGENT_GROUP_POLICIES.kind, r.AGENT_GROUP_POLICIES.namespaced) == ("AgentGroupPolicy", False)
    assert r.EVENTS.api_version == "v1"
    assert r.SANDBOXES_V1BETA1.api_version == "agents.x-k8s.io/v1beta1"
    assert r.SANDBOX_CLAIMS_V1ALPHA1.api_version == "extensions.agents.x-k8s.io/v1alpha1"
    assert r.RUNTIMES_BY_KIND == {"CodeInterpreter": r.CODE_INTERPRETERS, "AgentRuntime": r.AGENT_RUNTIMES}
    assert str(r.SANDBOXES_V1ALPHA1) == "sandboxes.agents.x-k8s.io/v1alpha1"
    assert str(r.SECRETS) == "secrets/v1"
