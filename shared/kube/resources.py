"""The Kubernetes resources the project reads and writes, and their REST paths."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from shared.models import AGENT_RUNTIME, CODE_INTERPRETER, GROUP, KIND, PLURAL, RUNTIME_PLURALS, VERSION
from shared.policy import POLICY_KIND, POLICY_PLURAL


def _segment(value: str) -> str:
    # A name from user input must never add path segments or a query.
    return quote(value, safe="")


@dataclass(frozen=True)
class Resource:
    """One served version of one resource type, e.g. ``agents.x-k8s.io/v1beta1 sandboxes``.

    ``group`` is ``""`` for the core API group (``/api/v1``).
    """

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` field of this resource's objects."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path of the collection or, with ``name``, of one object.

        For a namespaced resource, no ``namespace`` means the collection across all namespaces.
        A cluster-scoped resource ignores ``namespace`` (objects carry ``metadata.namespace: ""``).
        """
        if subresource and not name:
            raise ValueError(f"{self.plural}: subresource {subresource!r} needs an object name")
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{_segment(namespace)}")
        parts.append(self.plural)
        if name:
            parts.append(_segment(name))
            if subresource:
                parts.append(_segment(subresource))
        return "/".join(parts)

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}" if self.group else f"{self.plural}/{self.version}"


SANDBOX_GROUP = "agents.x-k8s.io"
SANDBOX_CLAIM_GROUP = "extensions.agents.x-k8s.io"

AGENT_GROUPS = Resource(GROUP, VERSION, PLURAL, KIND, namespaced=True)
CODE_INTERPRETERS = Resource(GROUP, VERSION, RUNTIME_PLURALS[CODE_INTERPRETER], CODE_INTERPRETER, True)
AGENT_RUNTIMES = Resource(GROUP, VERSION, RUNTIME_PLURALS[AGENT_RUNTIME], AGENT_RUNTIME, True)
AGENT_GROUP_POLICIES = Resource(GROUP, VERSION, POLICY_PLURAL, POLICY_KIND, namespaced=False)

SANDBOXES_V1ALPHA1 = Resource(SANDBOX_GROUP, "v1alpha1", "sandboxes", "Sandbox", namespaced=True)
SANDBOXES_V1BETA1 = Resource(SANDBOX_GROUP, "v1beta1", "sandboxes", "Sandbox", namespaced=True)
SANDBOX_CLAIMS_V1ALPHA1 = Resource(SANDBOX_CLAIM_GROUP, "v1alpha1", "sandboxclaims", "SandboxClaim", True)
SANDBOX_CLAIMS_V1BETA1 = Resource(SANDBOX_CLAIM_GROUP, "v1beta1", "sandboxclaims", "SandboxClaim", True)

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SECRETS = Resource("", "v1", "secrets", "Secret", namespaced=True)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", namespaced=True)
# Core v1 Events: what `kubectl describe` shows under "Events:".
EVENTS = Resource("", "v1", "events", "Event", namespaced=True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
VALIDATING_WEBHOOK_CONFIGURATIONS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)

RUNTIMES_BY_KIND = {CODE_INTERPRETER: CODE_INTERPRETERS, AGENT_RUNTIME: AGENT_RUNTIMES}
