"""The controller's list+watch caches, and the mapping of every cache event to the groups it concerns.

AgentGroups, Sandboxes (all of them: a name taken by someone else and a claim's Sandbox matter too),
SandboxClaims, CodeInterpreters and AgentRuntimes are cached by every replica, leader or not, so a
standby takes over with warm caches. Each event enqueues the keys (``namespace/name``) of the groups
it concerns: the group itself; the group owning a Sandbox or claim, directly or through a claim; the
groups whose spec names that Sandbox; the groups using a runtime.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import Any

from controller import metrics
from controller.expectations import Expectations
from controller.index import GroupIndex, OwnerIndex, controller_ref, owning_group
from shared.kube.informer import EventType, Informer, ListWatcher, object_key
from shared.kube.resources import AGENT_GROUPS, RUNTIMES_BY_KIND, Resource
from shared.sandboxes import CLAIM_KIND, SANDBOX_KIND

GroupKey = str
"""``namespace/name`` of an AgentGroup: the work queue's key."""


def group_key(namespace: str, name: str) -> GroupKey:
    return f"{namespace}/{name}"


def split_key(key: GroupKey) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


class Caches:
    def __init__(
        self,
        kube: ListWatcher,
        *,
        sandboxes: Resource,
        claims: Resource | None,
        enqueue: Callable[[GroupKey], None],
        namespace: str | None = None,
        expectations: Expectations | None = None,
    ) -> None:
        self.enqueue = enqueue
        self.expect = expectations or Expectations()
        self.group_index = GroupIndex()
        self.owned = {SANDBOX_KIND: OwnerIndex(), CLAIM_KIND: OwnerIndex()}
        self._phases: dict[tuple[str, str], str] = {}
        self.groups = Informer(kube, AGENT_GROUPS, namespace=namespace, handler=self._on_group)
        self.sandboxes = Informer(
            kube, sandboxes, namespace=namespace, handler=functools.partial(self._on_owned, SANDBOX_KIND)
        )
        self.claims = (
            Informer(kube, claims, namespace=namespace, handler=functools.partial(self._on_owned, CLAIM_KIND))
            if claims is not None
            else None
        )
        self.runtimes = {
            kind: Informer(kube, res, namespace=namespace, handler=functools.partial(self._on_runtime, kind))
            for kind, res in RUNTIMES_BY_KIND.items()
        }

    @property
    def informers(self) -> list[Informer]:
        optional = [self.claims] if self.claims is not None else []
        return [self.groups, self.sandboxes, *optional, *self.runtimes.values()]

    @property
    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers)

    async def wait_synced(self) -> None:
        await asyncio.gather(*(inf.synced.wait() for inf in self.informers))

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(inf.run(stop) for inf in self.informers))

    def group_keys(self) -> list[GroupKey]:
        return [group_key(*object_key(obj)) for obj in self.groups.items()]

    def informer_for(self, kind: str) -> Informer | None:
        return self.sandboxes if kind == SANDBOX_KIND else self.claims

    # --- handlers -----------------------------------------------------------------------------------

    def _on_group(self, event: EventType, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        self.group_index.update(event, obj)
        self.expect.observe_group(event, obj)
        old = self._phases.pop(key, None)
        if old is not None:
            metrics.GROUPS.labels(old).dec()
        if event != "DELETED":
            phase = str((obj.get("status") or {}).get("phase") or "Pending")
            self._phases[key] = phase
            metrics.GROUPS.labels(phase).inc()
        self.enqueue(group_key(*key))

    def _on_owned(self, kind: str, event: EventType, obj: dict[str, Any]) -> None:
        self.owned[kind].update(event, obj)
        self.expect.observe(kind, event, obj)
        namespace, name = object_key(obj)
        self._enqueue_all(namespace, self._groups_of(namespace, name, obj))

    def _groups_of(self, namespace: str, name: str, obj: dict[str, Any]) -> Iterable[str]:
        yield from self.group_index.groups_naming(namespace, name)
        owner = owning_group(obj)
        if owner is not None:
            yield owner
        ref = controller_ref(obj)
        if ref is not None and ref.get("kind") == CLAIM_KIND and self.claims is not None:
            claim = self.claims.get(str(ref.get("name", "")), namespace)
            if claim is not None:
                yield from self._groups_of(namespace, str(ref.get("name", "")), claim)

    def _on_runtime(self, kind: str, event: EventType, obj: dict[str, Any]) -> None:
        namespace, name = object_key(obj)
        self._enqueue_all(namespace, self.group_index.groups_using(namespace, kind, name))

    def _enqueue_all(self, namespace: str, names: Iterable[str]) -> None:
        for name in set(names):
            self.enqueue(group_key(namespace, name))
