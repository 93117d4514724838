"""Reason codes and the verdict every entry point (webhook, controller, CLI) reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    NO_AGENTS = "NoAgents"
    INVALID_AGENT_NAME = "InvalidAgentName"
    DUPLICATE_AGENT_NAME = "DuplicateAgentName"
    INVALID_REPLICAS = "InvalidReplicas"
    INVALID_RUNTIME_KIND = "InvalidRuntimeKind"
    UNKNOWN_AGENT = "UnknownAgent"
    SELF_DEPENDENCY = "SelfDependency"
    DEPENDENCY_CYCLE = "DependencyCycle"
    UNSUPPORTED_TOPOLOGY = "UnsupportedTopology"
    RUNTIME_NOT_FOUND = "RuntimeNotFound"
    POLICY_VIOLATION = "PolicyViolation"
    # Not in the rule table: the object does not have the AgentGroup shape at all (wrong kind, a
    # string where a list belongs, an unknown failurePolicy). The CRD schema rejects most of these
    # before admission; the CLI sees them in files.
    INVALID_SPEC = "InvalidSpec"
    # Warnings.
    DUPLICATE_DEPENDENCY = "DuplicateDependency"


@dataclass(frozen=True, slots=True)
class Finding:
    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason, "message": self.message}


@dataclass(frozen=True, slots=True)
class Verdict:
    """All violations (deny), warnings (allow, shown to the user) and dry-run findings (counted only)."""

    violations: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()
    dryrun: tuple[Finding, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.violations

    @property
    def spec_violations(self) -> tuple[Finding, ...]:
        return tuple(v for v in self.violations if v.reason != Reason.POLICY_VIOLATION)

    @property
    def status_code(self) -> int:
        """200 allowed; 422 (Invalid) when the spec itself is wrong; 403 (Forbidden) for policy only."""
        if self.allowed:
            return 200
        return 422 if self.spec_violations else 403

    @property
    def status_reason(self) -> str:
        return {200: "", 422: "Invalid", 403: "Forbidden"}[self.status_code]

    @property
    def message(self) -> str:
        """One violation per line, each ``<field>: <Reason>: <message>``."""
        return "\n".join(str(v) for v in self.violations)
