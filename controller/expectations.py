"""Our own recent writes that the watch has not delivered yet.

A reconcile that runs before the cache shows what the previous one did would create a Sandbox again
(a wasted 409), miss a delete, or rewrite a status it already wrote. So each write is remembered
until the informer reports the object (or its deletion), and reconciles read through it:

* a created object counts as existing;
* a deleted object counts as terminating;
* the group is the newer of the cached one and the one our last patch returned.

Entries also expire after ``ttl`` seconds, so a missed event can never pin a stale view.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.kube.informer import EventType, object_key
from shared.sandboxes import rfc3339

Key = tuple[str, str, str]
"""(kind, namespace, name)"""


@dataclass(frozen=True, slots=True)
class _Entry:
    uid: str
    obj: dict[str, Any] | None
    expires: float


def _uid(obj: dict[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid") or "")


def _resource_version(obj: dict[str, Any]) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether ``a`` is a later state of the same object than ``b``.

    Kubernetes calls resourceVersions opaque; etcd-backed servers issue increasing integers, and a
    server that does not is treated as "not newer", which only costs a redundant write.
    """
    ra, rb = _resource_version(a), _resource_version(b)
    return _uid(a) == _uid(b) and ra is not None and rb is not None and ra > rb


class Expectations:
    def __init__(
        self,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._wall = wall
        self._created: dict[Key, _Entry] = {}
        self._deleted: dict[Key, _Entry] = {}
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}

    # --- recording our writes ---------------------------------------------------------------------

    def created(self, kind: str, obj: dict[str, Any]) -> None:
        namespace, name = object_key(obj)
        self._created[kind, namespace, name] = _Entry(_uid(obj), obj, self._clock() + self.ttl)

    def deleted(self, kind: str, namespace: str, name: str, uid: str) -> None:
        self._deleted[kind, namespace, name] = _Entry(uid, None, self._clock() + self.ttl)
        self._created.pop((kind, namespace, name), None)

    def wrote_group(self, obj: dict[str, Any]) -> None:
        self._groups[object_key(obj)] = obj

    # --- what the watch reports -------------------------------------------------------------------

    def observe(self, kind: str, event: EventType, obj: dict[str, Any]) -> None:
        namespace, name = object_key(obj)
        key = (kind, namespace, name)
        uid = _uid(obj)
        created = self._created.get(key)
        if created is not None and created.uid == uid:
            del self._created[key]
        deleted = self._deleted.get(key)
        if deleted is not None and (event == "DELETED" or deleted.uid != uid):
            del self._deleted[key]

    def observe_group(self, event: EventType, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        written = self._groups.get(key)
        if written is not None and (event == "DELETED" or not newer(written, obj)):
            del self._groups[key]

    def forget_group(self, namespace: str, name: str) -> None:
        self._groups.pop((namespace, name), None)

    # --- reading through them ---------------------------------------------------------------------

    def view(
        self, kind: str, namespace: str, name: str, cached: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """What a reconcile should believe about one object, given the cached copy."""
        key = (kind, namespace, name)
        now = self._clock()
        created = self._created.get(key)
        if created is not None:
            if created.expires <= now or cached is not None:
                del self._created[key]
            else:
                return created.obj
        deleted = self._deleted.get(key)
        if deleted is not None:
            if deleted.expires <= now or cached is None or _uid(cached) != deleted.uid:
                del self._deleted[key]
            elif not (cached.get("metadata") or {}).get("deletionTimestamp"):
                meta = {**cached["metadata"], "deletionTimestamp": rfc3339(self._wall())}
                return {**cached, "metadata": meta}
        return cached

    def group_view(self, cached: dict[str, Any]) -> dict[str, Any]:
        written = self._groups.get(object_key(cached))
        return written if written is not None and newer(written, cached) else cached

    def pending(self) -> int:
        """How many writes the watch has not confirmed yet."""
        return len(self._created) + len(self._deleted) + len(self._groups)
