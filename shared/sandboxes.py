"""Pure construction of the Sandboxes (and warm-path SandboxClaims) an agent runs in.

One body per (group, agent, replica index), for either served API version. The controller only sends
these bodies; nothing here does I/O. Bodies never change once created (``shutdownTime`` is computed at
creation), so an existing Sandbox is never rewritten.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from shared.models import (
    API_VERSION,
    KIND,
    AgentGroup,
    AgentRuntime,
    AgentSpec,
    CodeInterpreter,
    Condition,
    KubeModel,
    ObjectMeta,
    Runtime,
)
from shared.naming import label_value

SANDBOX_GROUP = "agents.x-k8s.io"
CLAIM_GROUP = "extensions.agents.x-k8s.io"
V1ALPHA1 = "v1alpha1"
V1BETA1 = "v1beta1"
API_VERSIONS = (V1ALPHA1, V1BETA1)
SANDBOX_KIND = "Sandbox"
CLAIM_KIND = "SandboxClaim"

GROUP_LABEL = "runtime.agentcube.io/agent-group"
AGENT_LABEL = "runtime.agentcube.io/agent-name"
# Which runtime a Sandbox was made from: a changed runtimeRef replaces the Sandbox.
RUNTIME_ANNOTATION = "runtime.agentcube.io/runtime-ref"
# The container a CodeInterpreter's template becomes.
CONTAINER_NAME = "agent"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> timedelta:
    """A Go duration (``"8h"``, ``"15m"``, ``"1h30m"``, ``"1.5s"``, ``"0"``); ``ValueError`` otherwise."""
    raw = text.strip()
    body = raw.removeprefix("-").removeprefix("+")
    if body == "0":
        return timedelta(0)
    pos, seconds = 0, 0.0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f'"{text}" is not a duration: use a number with a unit, like "8h", "15m" or "1h30m"')
    return timedelta(seconds=-seconds if raw.startswith("-") else seconds)


def rfc3339(moment: datetime) -> str:
    """``2025-01-02T03:04:05Z``: the seconds-precision UTC form Kubernetes writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """A Kubernetes timestamp as an aware datetime; ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def runtime_ref(agent: AgentSpec) -> str:
    return f"{agent.runtime_ref.kind}/{agent.runtime_ref.name}"


def owner_reference(group: AgentGroup) -> dict[str, Any]:
    """The controller reference that lets the garbage collector delete a group's objects with it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": group.metadata.name,
        "uid": group.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def our_labels(group: AgentGroup, agent: AgentSpec) -> dict[str, str]:
    return {GROUP_LABEL: label_value(group.metadata.name), AGENT_LABEL: agent.name}


def _metadata(group: AgentGroup, agent: AgentSpec, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": group.metadata.namespace,
        "labels": our_labels(group, agent),
        "annotations": {RUNTIME_ANNOTATION: runtime_ref(agent)},
        "ownerReferences": [owner_reference(group)],
    }


def _code_interpreter_pod(runtime: CodeInterpreter) -> dict[str, Any]:
    t = runtime.spec.template
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": t.image}
    optional: dict[str, Any] = {
        "imagePullPolicy": t.image_pull_policy,
        "command": list(t.command),
        "args": list(t.args),
        "env": [dict(e) for e in t.environment],
        "resources": dict(t.resources),
    }
    container.update({k: v for k, v in optional.items() if v})
    pod: dict[str, Any] = {"containers": [container]}
    if t.image_pull_secrets:
        pod["imagePullSecrets"] = [dict(s) for s in t.image_pull_secrets]
    if t.runtime_class_name:
        pod["runtimeClassName"] = t.runtime_class_name
    return pod


def pod_template(group: AgentGroup, agent: AgentSpec, runtime: Runtime) -> dict[str, Any]:
    """The Sandbox's ``spec.podTemplate``: the runtime's pod, its labels and annotations, and ours."""
    if isinstance(runtime, AgentRuntime):
        tpl = runtime.spec.pod_template
        labels, annotations, spec = dict(tpl.labels), dict(tpl.annotations), dict(tpl.spec)
    else:
        t = runtime.spec.template
        labels, annotations, spec = dict(t.labels), dict(t.annotations), _code_interpreter_pod(runtime)
    labels.update(our_labels(group, agent))
    metadata: dict[str, Any] = {"labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec}


def max_session_duration(runtime: Runtime) -> timedelta | None:
    """The runtime's ``maxSessionDuration``; ``None`` when unset; ``ValueError`` when unreadable."""
    text = runtime.spec.max_session_duration
    return parse_duration(text) if text else None


def sandbox_body(
    group: AgentGroup,
    agent: AgentSpec,
    name: str,
    runtime: Runtime,
    *,
    api_version: str,
    now: datetime,
) -> dict[str, Any]:
    """A cold Sandbox for one replica of ``agent``.

    Running in both versions: ``replicas: 1`` in v1alpha1 (a v1alpha1 Sandbox with 0 replicas reports
    Ready), ``operatingMode: Running`` in v1beta1. An unreadable ``maxSessionDuration`` leaves out
    ``shutdownTime``; the planner reports it on the agent.
    """
    if api_version not in API_VERSIONS:
        raise ValueError(f"Sandbox API version {api_version!r} is not one of {', '.join(API_VERSIONS)}")
    spec: dict[str, Any] = {"podTemplate": pod_template(group, agent, runtime)}
    if api_version == V1ALPHA1:
        spec["replicas"] = 1
    else:
        spec["operatingMode"] = "Running"
    try:
        lifetime = max_session_duration(runtime)
    except ValueError:
        lifetime = None
    if lifetime:
        spec["shutdownTime"] = rfc3339(now + lifetime)
    return {
        "apiVersion": f"{SANDBOX_GROUP}/{api_version}",
        "kind": SANDBOX_KIND,
        "metadata": _metadata(group, agent, name),
        "spec": spec,
    }


def claim_body(
    group: AgentGroup, agent: AgentSpec, name: str, runtime: CodeInterpreter, *, api_version: str
) -> dict[str, Any]:
    """A SandboxClaim on the warm pool agentcube keeps for ``runtime`` (named after it).

    v1alpha1 names the pool's SandboxTemplate (``sandboxTemplateRef``), v1beta1 the SandboxWarmPool
    (``warmPoolRef``); agentcube names both after the CodeInterpreter.
    """
    if api_version not in API_VERSIONS:
        raise ValueError(f"SandboxClaim API version {api_version!r} is not one of {', '.join(API_VERSIONS)}")
    ref = {"name": runtime.metadata.name}
    spec = {"sandboxTemplateRef": ref} if api_version == V1ALPHA1 else {"warmPoolRef": ref}
    return {
        "apiVersion": f"{CLAIM_GROUP}/{api_version}",
        "kind": CLAIM_KIND,
        "metadata": _metadata(group, agent, name),
        "spec": spec,
    }


def wants_claim(runtime: Runtime) -> bool:
    """The warm path: a CodeInterpreter that keeps a warm pool."""
    return isinstance(runtime, CodeInterpreter) and runtime.spec.warm_pool_size > 0


# --- SandboxClaim (agent-sandbox extensions; we create them on the warm path) -----------------------


class ClaimedSandbox(KubeModel):
    # Older agent-sandbox releases spell the field "Name".
    name: str = ""
    legacy_name: str = Field("", alias="Name")

    @property
    def sandbox_name(self) -> str:
        return self.name or self.legacy_name


class SandboxClaimStatus(KubeModel):
    conditions: tuple[Condition, ...] = ()
    sandbox: ClaimedSandbox = Field(default_factory=ClaimedSandbox)


class SandboxClaim(KubeModel):
    """A SandboxClaim of either version; agent-sandbox mirrors the claimed Sandbox's Ready on it."""

    api_version: str = Field("", alias="apiVersion")
    kind: str = CLAIM_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: dict[str, Any] = Field(default_factory=dict)
    status: SandboxClaimStatus = Field(default_factory=SandboxClaimStatus)

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)
