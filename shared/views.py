"""What the admission rules read of an AgentGroup, as read-only protocols.

:class:`shared.models.AgentGroup` satisfies them, and so does the webhook's fast decoding of an
AdmissionReview (:mod:`webhook.review`), which builds lighter objects than pydantic for the same
JSON. The rules take a :class:`GroupView`, so one implementation serves both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class RuntimeRefView(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...


class AgentView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def replicas(self) -> int: ...
    @property
    def runtime_ref(self) -> RuntimeRefView: ...


class DependencyView(Protocol):
    @property
    def from_(self) -> str: ...
    @property
    def to(self) -> str: ...


class SpecView(Protocol):
    @property
    def topology(self) -> str: ...
    @property
    def failure_policy(self) -> str: ...
    @property
    def agents(self) -> Sequence[AgentView]: ...
    @property
    def dependencies(self) -> Sequence[DependencyView]: ...


class MetaView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def deletion_timestamp(self) -> str | None: ...


class GroupView(Protocol):
    @property
    def metadata(self) -> MetaView: ...
    @property
    def spec(self) -> SpecView: ...
