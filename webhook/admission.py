"""AdmissionReview in, AdmissionReview out, around the rules of :mod:`shared.rules`.

No I/O of its own: what the rules need from the cluster (runtimes, policies, namespace labels) comes
through the :class:`Cluster` protocol, which the webhook backs with its caches and tests with a fake.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.findings import Finding, Verdict
from shared.models import AgentGroup
from shared.policy import AgentGroupPolicy
from shared.rules import RuntimeKey, parse, validate_group
from shared.views import GroupView

ADMISSION_API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
JUDGED_OPERATIONS = ("CREATE", "UPDATE")
# Reasons of causes that deny a request the webhook could not judge: the webhook, not the spec, is at
# fault, and the answer is 500 InternalError (with failurePolicy: Fail the API server would deny too).
LOOKUP_FAILED = "RuntimeLookupFailed"
NAMESPACE_LOOKUP_FAILED = "NamespaceLookupFailed"
INTERNAL_ERROR = "InternalError"


class ReviewError(ValueError):
    """The body is not a usable AdmissionReview; the message names the field and the fix."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The parts of ``AdmissionReview.request`` the webhook uses."""

    api_version: str
    uid: str
    operation: str
    namespace: str = ""
    name: str = ""
    group: str = ""  # of request.kind, the type of the object
    kind: str = ""
    sub_resource: str = ""
    user: str = ""
    dry_run: bool = False
    object: GroupView | None = None  # the AgentGroup to judge (CREATE, UPDATE), when it has that shape
    old_object: GroupView | None = None  # what it was before an UPDATE
    shape: tuple[Finding, ...] = ()  # why ``object`` is None on CREATE or UPDATE: it is no AgentGroup


def _string(request: Mapping[str, Any], key: str) -> str:
    value = request.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"request.{key} must be a string, got {type(value).__name__}")
    return value


def parse_review(body: Any) -> AdmissionRequest:
    """The request of an AdmissionReview decoded from JSON, its objects read by the pydantic models
    (the reference way of :mod:`webhook.review`); :class:`ReviewError` when unusable."""
    if not isinstance(body, dict):
        raise ReviewError("the body must be a JSON object: an admission.k8s.io/v1 AdmissionReview")
    api_version = body.get("apiVersion")
    if api_version not in ADMISSION_API_VERSIONS:
        raise ReviewError(f"apiVersion must be {ADMISSION_API_VERSIONS[0]}, got {api_version!r}")
    if body.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind must be AdmissionReview, got {body.get('kind')!r}")
    request = body.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request is missing: an AdmissionReview sent for review carries a request object")
    uid = _string(request, "uid")
    if not uid:
        raise ReviewError("request.uid is missing: the response must echo it, so it cannot be answered")
    operation = _string(request, "operation")
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
    obj = request.get("object")
    if operation in JUDGED_OPERATIONS and obj is None:
        raise ReviewError(f"request.object is missing: a {operation} review carries the object to judge")
    group_obj, shape = _group(obj) if operation in JUDGED_OPERATIONS else (None, [])
    old_obj = _group(request.get("oldObject"))[0] if operation == "UPDATE" else None
    user_info = request.get("userInfo")
    user = user_info.get("username") if isinstance(user_info, dict) else None
    gvk = request.get("kind")
    group, kind = (gvk.get("group"), gvk.get("kind")) if isinstance(gvk, dict) else ("", "")
    return AdmissionRequest(
        api_version=api_version,
        uid=uid,
        operation=operation,
        namespace=_string(request, "namespace"),
        name=_string(request, "name"),
        group=group if isinstance(group, str) else "",
        kind=kind if isinstance(kind, str) else "",
        sub_resource=_string(request, "subResource"),
        user=user if isinstance(user, str) else "",
        dry_run=request.get("dryRun") is True,
        object=group_obj,
        old_object=old_obj,
        shape=tuple(shape),
    )


def _group(obj: Any) -> tuple[AgentGroup | None, list[Finding]]:
    """The object as an AgentGroup, leaving out ``status``: users cannot set it through the API (it is a
    subresource) and the rules do not read it, so a status the controller wrote never blocks an edit."""
    if isinstance(obj, Mapping) and "status" in obj:
        obj = {k: v for k, v in obj.items() if k != "status"}
    return parse(obj)


@dataclass(frozen=True, slots=True)
class RuntimeLookup:
    """Which referenced runtimes exist; ``failed`` maps the ones that could not be checked to why."""

    found: frozenset[RuntimeKey]
    failed: Mapping[RuntimeKey, str] = field(default_factory=dict)


class Cluster(Protocol):
    """What the rules need to know about the cluster."""

    async def runtimes(self, namespace: str, refs: Collection[RuntimeKey]) -> RuntimeLookup:
        """Which of ``refs`` (CodeInterpreter / AgentRuntime (kind, name)) exist in ``namespace``."""
        ...

    def policies(self) -> Sequence[AgentGroupPolicy]: ...

    async def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """The namespace's labels; None when the namespace does not exist. Raises ``LookupError``
        (its message says why) when they cannot be read."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request.

    ``verdict`` is None when the request is not judged (DELETE, status); ``errors`` say why the webhook
    could not judge (part of) it.
    """

    verdict: Verdict | None = None
    errors: tuple[Finding, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.errors and (self.verdict is None or self.verdict.allowed)

    @property
    def denials(self) -> tuple[Finding, ...]:
        """Every reason the request is denied, rule violations first."""
        violations = self.verdict.violations if self.verdict else ()
        return violations + self.errors

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return self.verdict.warnings if self.verdict else ()

    @property
    def status(self) -> tuple[int, str]:
        """HTTP-style code and reason: the verdict's (422 Invalid / 403 Forbidden), else 500."""
        if self.verdict is not None and not self.verdict.allowed:
            return self.verdict.status_code, self.verdict.status_reason
        return (500, INTERNAL_ERROR) if self.errors else (200, "")


ALLOW = Decision()


def _runtime_refs(group: GroupView | None) -> set[RuntimeKey]:
    if group is None:
        return set()
    return {(a.runtime_ref.kind, a.runtime_ref.name) for a in group.spec.agents}


def _lookup_failures(group: GroupView, namespace: str, failed: Mapping[RuntimeKey, str]) -> list[Finding]:
    out: list[Finding] = []
    if not failed:
        return out
    for i, agent in enumerate(group.spec.agents):
        key = (agent.runtime_ref.kind, agent.runtime_ref.name)
        if key in failed:
            out.append(
                Finding(
                    f"spec.agents[{i}].runtimeRef",
                    LOOKUP_FAILED,
                    f'could not check that {key[0]} "{key[1]}" exists in namespace "{namespace}" '
                    f"({failed[key]}); try again",
                )
            )
    return out


async def decide(req: AdmissionRequest, cluster: Cluster) -> Decision:
    """Judge CREATE and UPDATE of an AgentGroup with every rule; allow everything else.

    On UPDATE, a runtime reference the old object already had is not looked up again: a runtime
    deleted after its group was admitted must not block unrelated edits (the controller reports it).
    A group being deleted is allowed, so that finalizers can always be removed. An UPDATE that leaves
    the spec and the labels as they were (annotations, finalizers, owner references, the controller's
    retry bookkeeping) is allowed too, like the API server's own validation ratcheting: the rules only
    read those two, and an existing group that a newer policy forbids is the audit's to report.
    """
    if req.operation not in JUDGED_OPERATIONS or req.sub_resource:
        return ALLOW
    group = req.object
    if group is None:
        return Decision(Verdict(req.shape))
    if group.metadata.deletion_timestamp:
        return ALLOW
    old = req.old_object
    if old is not None and (old.spec, old.metadata.labels) == (group.spec, group.metadata.labels):
        return ALLOW
    namespace = req.namespace or group.metadata.namespace or "default"
    carried = _runtime_refs(old)
    lookup = await cluster.runtimes(namespace, _runtime_refs(group) - carried)
    errors = _lookup_failures(group, namespace, lookup.failed)
    policies = cluster.policies()
    labels: Mapping[str, str] | None = None
    if policies:  # only policies read the namespace's labels
        try:
            labels = await cluster.namespace_labels(namespace)
        except LookupError as exc:
            message = (
                f'could not read the labels of namespace "{namespace}", which select the policies that '
                f"apply ({exc}); try again"
            )
            errors.append(Finding("metadata.namespace", NAMESPACE_LOOKUP_FAILED, message))
    verdict = validate_group(
        group,
        runtimes=lookup.found | carried | lookup.failed.keys(),
        policies=policies,
        namespace_labels=labels,
    )
    return Decision(verdict, tuple(errors))


def _cause(finding: Finding) -> dict[str, str]:
    # kubectl prints an Invalid error as one "field: message" line per cause and leaves out the status
    # message and the cause's reason, so the message carries the reason code too.
    return {
        "field": finding.field,
        "reason": finding.reason,
        "message": f"{finding.reason}: {finding.message}",
    }


def review_response(req: AdmissionRequest, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview to send back: the request's apiVersion and uid, the verdict, the warnings.

    A denial's status has the shape of the API server's own validation errors (details with the
    object's group, kind and name, one cause per violation), so kubectl shows it the same way:
    ``The AgentGroup "x" is invalid:`` followed by ``* <field>: <Reason>: <message>`` lines.
    """
    response: dict[str, Any] = {"uid": req.uid, "allowed": decision.allowed}
    if not decision.allowed:
        code, reason = decision.status
        denials = decision.denials
        response["status"] = {
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": "\n".join(str(d) for d in denials),
            "details": {
                "group": req.group,
                "kind": req.kind,
                "name": req.name,
                "causes": [_cause(d) for d in denials],
            },
        }
    if decision.warnings:
        response["warnings"] = [str(w) for w in decision.warnings]
    return {"apiVersion": req.api_version, "kind": "AdmissionReview", "response": response}
