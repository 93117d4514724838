"""Reading an AdmissionReview body: a typed decode for the usual review, the reference path for the rest.

The kube-apiserver sends well-formed reviews of AgentGroups that its schema has already checked, so
almost every body decodes straight into the msgspec structs below: a few microseconds, with no
intermediate dicts and no pydantic models. Anything else (malformed JSON, a wrong type anywhere, a
missing uid, another kind of object) goes the reference way, :func:`webhook.admission.parse_review`
over the same JSON parser, untyped, and the pydantic models, whose answer names every problem. For a
body the fast way accepts, both ways read the same request (``tests/webhook/test_review.py`` checks
this property), so the fast way changes how quickly a review is read, never what it says.

The structs mirror :class:`shared.models.AgentGroup` field for field and type for type (without
``status``, which the rules do not read and the API server does not take from users), so that a
value pydantic would refuse is refused here too and takes the reference way.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from shared.models import API_VERSION, KIND, FailurePolicy, Topology
from webhook.admission import (
    ADMISSION_API_VERSIONS,
    JUDGED_OPERATIONS,
    OPERATIONS,
    AdmissionRequest,
    ReviewError,
    parse_review,
)

# gc=False: these hold only strings, numbers and each other (the labels and owner references are
# plain containers the collector still sees), so they never form cycles and the collector can skip them.


class _RuntimeRef(msgspec.Struct, frozen=True, gc=False):
    kind: str = ""
    name: str = ""


class _Agent(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    name: str = ""
    role: str = ""
    replicas: int = 1
    runtime_ref: _RuntimeRef = msgspec.field(default_factory=_RuntimeRef)


class _Dependency(msgspec.Struct, frozen=True, gc=False):
    from_: str = msgspec.field(default="", name="from")
    to: str = ""


class _Spec(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    topology: str = Topology.HIERARCHICAL.value
    failure_policy: str = FailurePolicy.FAIL_FAST.value
    agents: tuple[_Agent, ...] = ()
    dependencies: tuple[_Dependency, ...] = ()


class _Meta(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    owner_references: tuple[dict[str, Any], ...] = ()


class _Group(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    api_version: str = ""
    kind: str = ""
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    spec: _Spec = msgspec.field(default_factory=_Spec)


class _UserInfo(msgspec.Struct, frozen=True, gc=False):
    username: str = ""


class _Kind(msgspec.Struct, frozen=True, gc=False):
    group: str = ""
    kind: str = ""


class _Request(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    uid: str = ""
    kind: _Kind = msgspec.field(default_factory=_Kind)
    name: str = ""
    namespace: str = ""
    operation: str = ""
    sub_resource: str = ""
    user_info: _UserInfo = msgspec.field(default_factory=_UserInfo)
    dry_run: bool = False
    object: _Group | None = None
    old_object: _Group | None = None


class _Review(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    api_version: str = ""
    kind: str = ""
    request: _Request | None = None


_DECODER = msgspec.json.Decoder(_Review)
_JSON = msgspec.json.Decoder()
# msgspec decodes recursively and stops at Python's recursion limit (1,000 by default): nesting a
# review never needs, only a hostile or broken client sends.
_MAX_DEPTH = sys.getrecursionlimit()


def _is_group(obj: _Group | None) -> bool:
    return obj is None or (obj.api_version == API_VERSION and obj.kind == KIND)


def read_fast(body: bytes) -> AdmissionRequest | None:
    """The request, when the body is the usual review of AgentGroups; None: use :func:`read_reference`."""
    try:
        review = _DECODER.decode(body)
    except (msgspec.MsgspecError, RecursionError):
        return None
    req = review.request
    if (
        req is None
        or review.api_version not in ADMISSION_API_VERSIONS
        or review.kind != "AdmissionReview"
        or not req.uid
        or req.operation not in OPERATIONS
        or (req.object is None and req.operation in JUDGED_OPERATIONS)
        or not (_is_group(req.object) and _is_group(req.old_object))
    ):
        return None
    judged = req.operation in JUDGED_OPERATIONS
    return AdmissionRequest(
        api_version=review.api_version,
        uid=req.uid,
        operation=req.operation,
        namespace=req.namespace,
        name=req.name,
        group=req.kind.group,
        kind=req.kind.kind,
        sub_resource=req.sub_resource,
        user=req.user_info.username,
        dry_run=req.dry_run,
        object=req.object if judged else None,
        old_object=req.old_object if req.operation == "UPDATE" else None,
    )


def read_reference(body: bytes) -> AdmissionRequest:
    """The request of any AdmissionReview in ``body``, the reference way.

    Raises ``msgspec.DecodeError`` when the body is not JSON and
    :class:`webhook.admission.ReviewError` when it is not a usable review.
    """
    try:
        doc = _JSON.decode(body)
    except RecursionError:
        raise ReviewError(
            f"the body nests deeper than {_MAX_DEPTH} levels; no AdmissionReview does"
        ) from None
    return parse_review(doc)
