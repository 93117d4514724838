"""Typed views of the Kubernetes objects the project reads and writes.

The models accept the JSON spellings of the API (camelCase) and ignore fields they do not use, so an
upstream object with more fields still parses. Shape rules (types) live here; the admission rules
(names, references, graphs, policy) live in :mod:`shared.rules` so that every violation can be reported
at once with its reason code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GROUP = "runtime.agentcube.volcano.sh"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AgentGroup"
PLURAL = "agentgroups"

CODE_INTERPRETER = "CodeInterpreter"
AGENT_RUNTIME = "AgentRuntime"
RUNTIME_KINDS = (CODE_INTERPRETER, AGENT_RUNTIME)
RUNTIME_PLURALS = {CODE_INTERPRETER: "codeinterpreters", AGENT_RUNTIME: "agentruntimes"}


class Topology(StrEnum):
    HIERARCHICAL = "Hierarchical"
    PEER = "Peer"


class FailurePolicy(StrEnum):
    FAIL_FAST = "FailFast"
    RETRY_SUB_AGENT = "RetrySubAgent"
    CONTINUE_DEGRADED = "ContinueDegraded"


class Phase(StrEnum):
    PENDING = "Pending"
    INITIALIZING = "Initializing"
    RUNNING = "Running"
    FAILED = "Failed"


class KubeModel(BaseModel):
    # Fields are read by their API (JSON) names only, as the API server reads them: ``runtime_ref`` in
    # a manifest is an unknown field, not a second spelling of ``runtimeRef``.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ObjectMeta(KubeModel):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = Field("", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: str | None = Field(None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(None, alias="deletionTimestamp")
    owner_references: tuple[dict[str, Any], ...] = Field((), alias="ownerReferences")


# --- AgentGroup -----------------------------------------------------------------------------------
# Enumerated fields are plain strings here: an unknown value is an admission violation with its own
# reason code (see shared.rules), not a parse error.


class RuntimeRef(KubeModel):
    kind: str = ""
    name: str = ""


class AgentSpec(KubeModel):
    name: str = ""
    role: str = ""
    replicas: int = 1
    runtime_ref: RuntimeRef = Field(default_factory=RuntimeRef, alias="runtimeRef")


class Dependency(KubeModel):
    from_: str = Field("", alias="from")
    to: str = ""


class AgentGroupSpec(KubeModel):
    topology: str = Topology.HIERARCHICAL.value
    failure_policy: str = Field(FailurePolicy.FAIL_FAST.value, alias="failurePolicy")
    agents: tuple[AgentSpec, ...] = ()
    dependencies: tuple[Dependency, ...] = ()


class Condition(KubeModel):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = Field(None, alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class AgentStatus(KubeModel):
    name: str
    phase: str = ""
    sandbox_names: tuple[str, ...] = Field((), alias="sandboxNames")
    ready_replicas: int = Field(0, alias="readyReplicas")
    message: str = ""
    waiting_for: tuple[str, ...] = Field((), alias="waitingFor")


class AgentGroupStatus(KubeModel):
    phase: str = ""
    observed_generation: int | None = Field(None, alias="observedGeneration")
    total_agents: int = Field(0, alias="totalAgents")
    ready_agents: int = Field(0, alias="readyAgents")
    start_time: str | None = Field(None, alias="startTime")
    agents: tuple[AgentStatus, ...] = ()
    conditions: tuple[Condition, ...] = ()


class AgentGroup(KubeModel):
    api_version: str = Field(API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AgentGroupSpec = Field(default_factory=AgentGroupSpec)
    status: AgentGroupStatus = Field(default_factory=AgentGroupStatus)


# --- Runtimes (agentcube; we only read them) ------------------------------------------------------


class CodeInterpreterTemplate(KubeModel):
    image: str = ""
    image_pull_policy: str | None = Field(None, alias="imagePullPolicy")
    image_pull_secrets: tuple[dict[str, Any], ...] = Field((), alias="imagePullSecrets")
    environment: tuple[dict[str, Any], ...] = ()
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    resources: dict[str, Any] = Field(default_factory=dict)
    runtime_class_name: str | None = Field(None, alias="runtimeClassName")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class CodeInterpreterSpec(KubeModel):
    template: CodeInterpreterTemplate = Field(default_factory=CodeInterpreterTemplate)
    ports: tuple[dict[str, Any], ...] = ()
    session_timeout: str | None = Field(None, alias="sessionTimeout")
    max_session_duration: str | None = Field(None, alias="maxSessionDuration")
    warm_pool_size: int = Field(0, alias="warmPoolSize")
    auth_mode: str | None = Field(None, alias="authMode")


class CodeInterpreter(KubeModel):
    kind: str = CODE_INTERPRETER
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: CodeInterpreterSpec = Field(default_factory=CodeInterpreterSpec)


class PodTemplate(KubeModel):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)


class AgentRuntimeSpec(KubeModel):
    pod_template: PodTemplate = Field(default_factory=PodTemplate, alias="podTemplate")
    target_port: tuple[dict[str, Any], ...] = Field((), alias="targetPort")
    session_timeout: str | None = Field(None, alias="sessionTimeout")
    max_session_duration: str | None = Field(None, alias="maxSessionDuration")


class AgentRuntime(KubeModel):
    kind: str = AGENT_RUNTIME
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AgentRuntimeSpec = Field(default_factory=AgentRuntimeSpec)


Runtime = CodeInterpreter | AgentRuntime


# --- Sandbox (agent-sandbox; we create them) ------------------------------------------------------


class SandboxStatus(KubeModel):
    conditions: tuple[Condition, ...] = ()


class Sandbox(KubeModel):
    """A Sandbox of either served version; readiness is the same condition in both."""

    api_version: str = Field("", alias="apiVersion")
    kind: str = "Sandbox"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: dict[str, Any] = Field(default_factory=dict)
    status: SandboxStatus = Field(default_factory=SandboxStatus)

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)
