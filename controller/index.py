"""Reverse indexes over the caches: which objects a group owns, and which groups an event concerns.

Fed by the informers' handlers, so a Sandbox or runtime event finds its groups without scanning
every group, and a reconcile finds a group's objects without scanning every Sandbox.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import ValidationError

from shared.kube.informer import EventType, object_key
from shared.models import KIND, AgentGroup
from shared.planner import sandbox_names

NamespacedName = tuple[str, str]


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return next((r for r in refs if isinstance(r, dict) and r.get("controller")), None)


class OwnerIndex:
    """(namespace, controller owner uid) -> names of the objects of one resource."""

    def __init__(self) -> None:
        self._names: defaultdict[NamespacedName, set[str]] = defaultdict(set)
        self._owner: dict[NamespacedName, str] = {}

    def update(self, event: EventType, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        namespace, name = key
        old = self._owner.pop(key, None)
        if old is not None:
            self._discard((namespace, old), name)
        ref = controller_ref(obj)
        if event != "DELETED" and ref is not None and ref.get("uid"):
            uid = str(ref["uid"])
            self._owner[key] = uid
            self._names[namespace, uid].add(name)

    def _discard(self, owner: NamespacedName, name: str) -> None:
        names = self._names.get(owner)
        if names is not None:
            names.discard(name)
            if not names:
                del self._names[owner]

    def names(self, namespace: str, owner_uid: str) -> set[str]:
        return set(self._names.get((namespace, owner_uid), ()))


class GroupIndex:
    """What each AgentGroup refers to: its Sandbox names and its runtimes, by namespace."""

    def __init__(self) -> None:
        self._by_sandbox: defaultdict[NamespacedName, set[str]] = defaultdict(set)
        self._by_runtime: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
        self._refs: dict[NamespacedName, tuple[list[str], list[tuple[str, str]]]] = {}

    def update(self, event: EventType, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        namespace, name = key
        old_names, old_runtimes = self._refs.pop(key, ([], []))
        for sandbox in old_names:
            self._drop(self._by_sandbox, (namespace, sandbox), name)
        for kind, runtime in old_runtimes:
            self._drop(self._by_runtime, (namespace, kind, runtime), name)
        if event == "DELETED":
            return
        try:
            group = AgentGroup.model_validate(obj)
        except ValidationError:
            return  # the reconcile reports it; there is nothing to index
        names = sandbox_names(group)
        runtimes = [(a.runtime_ref.kind, a.runtime_ref.name) for a in group.spec.agents]
        self._refs[key] = (names, runtimes)
        for sandbox in names:
            self._by_sandbox[namespace, sandbox].add(name)
        for kind, runtime in runtimes:
            self._by_runtime[namespace, kind, runtime].add(name)

    @staticmethod
    def _drop(index: defaultdict[Any, set[str]], key: Any, name: str) -> None:
        names = index.get(key)
        if names is not None:
            names.discard(name)
            if not names:
                del index[key]

    def groups_naming(self, namespace: str, sandbox: str) -> set[str]:
        """Groups whose spec asks for a Sandbox (or claim) of this name."""
        return set(self._by_sandbox.get((namespace, sandbox), ()))

    def groups_using(self, namespace: str, kind: str, runtime: str) -> set[str]:
        return set(self._by_runtime.get((namespace, kind, runtime), ()))


def owning_group(obj: dict[str, Any]) -> str | None:
    """The name of the AgentGroup that controls ``obj``, if one does."""
    ref = controller_ref(obj)
    if ref is not None and ref.get("kind") == KIND and ref.get("name"):
        return str(ref["name"])
    return None
