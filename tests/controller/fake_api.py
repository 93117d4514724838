"""An in-memory Kubernetes API for controller tests: every resource, writes, watches, GC and faults.

It speaks the dict-in, dict-out interface of :class:`shared.kube.raw.Kube` (list, watch, get,
create, replace, patch, delete, discover) with what the controller relies on: uids, one global
resourceVersion, generation bumps on spec changes, the status subresource, delete preconditions,
AlreadyExists / Conflict / NotFound as :class:`ApiError`, background deletion of dependents (the
garbage collector), and a watch that replays every event after its resourceVersion. Every write is
counted by ``(verb, resource)``; ``faults`` makes the next matching calls fail.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from shared.kube.raw import ApiError
from shared.kube.resources import Resource
from shared.sandboxes import rfc3339
from tests.controller.objects import T0

Key = tuple[str, str, str]
"""(plural, namespace, name)"""


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, eq, value = term.partition("=")
        if (eq and labels.get(key) != value) or (not eq and key not in labels):
            return False
    return True


class FakeApi:
    def __init__(self, *, served: dict[str, list[str]] | None = None) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []  # (rv, plural, event)
        self.served = served if served is not None else {}
        self.writes: Counter[tuple[str, str]] = Counter()
        self.faults: list[tuple[str, str, ApiError]] = []  # (verb, plural, error), first match is used
        self.rv = 1000
        self._uids = itertools.count(1)
        self._changed = asyncio.Condition()

    # --- helpers for tests -----------------------------------------------------------------------

    def items(self, res: Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        return [
            o
            for (plural, ns, _), o in sorted(self.objects.items())
            if plural == res.plural and namespace in (None, ns)
        ]

    def obj(self, res: Resource, name: str, namespace: str) -> dict[str, Any] | None:
        return self.objects.get((res.plural, namespace, name))

    def fail(self, verb: str, res: Resource, error: ApiError) -> None:
        self.faults.append((verb, res.plural, error))

    def _fault(self, verb: str, plural: str) -> None:
        for i, (v, p, error) in enumerate(self.faults):
            if v == verb and p == plural:
                del self.faults[i]
                raise error

    async def _record(self, res: Resource, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        meta = obj["metadata"]
        key = (res.plural, meta.get("namespace", ""), meta["name"])
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.history.append((self.rv, res.plural, {"type": kind, "object": copy.deepcopy(obj)}))
        async with self._changed:
            self._changed.notify_all()
        return copy.deepcopy(obj)

    def _newer_than(self, rv: int) -> bool:
        return bool(self.history) and self.history[-1][0] > rv

    # --- the API --------------------------------------------------------------------------------

    async def discover(self, group: str) -> list[str]:
        return list(self.served.get(group, []))

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        self._fault("list", res.plural)
        found = [
            copy.deepcopy(o)
            for o in self.items(res, namespace)
            if _matches(o["metadata"].get("labels") or {}, label_selector)
        ]
        return found, str(self.rv)

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        seen = int(resource_version or 0)
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._newer_than, seen))
            for rv, plural, event in [e for e in self.history if e[0] > seen]:
                seen = rv
                meta = event["object"]["metadata"]
                if (
                    plural == res.plural
                    and namespace in (None, meta.get("namespace"))
                    and _matches(meta.get("labels") or {}, label_selector)
                ):
                    yield copy.deepcopy(event)

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self._fault("get", res.plural)
        obj = self.objects.get((res.plural, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    async def create(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        self._fault("create", res.plural)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace or meta.get("namespace", "")
        if (res.plural, meta["namespace"], meta.get("name", "")) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists')
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{next(self._uids):05d}"
        meta.update(uid=f"uid-{next(self._uids)}", generation=1, creationTimestamp=rfc3339(T0))
        self.writes["create", res.plural] += 1
        return await self._record(res, "ADDED", obj)

    async def replace(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        self._fault("replace", res.plural)
        meta = body["metadata"]
        current = self.objects.get((res.plural, namespace or meta.get("namespace", ""), meta["name"]))
        if current is None:
            raise ApiError(404, "NotFound", f'{res.plural} "{meta["name"]}" not found')
        if meta.get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
            raise ApiError(409, "Conflict", "the object has been modified")
        obj = copy.deepcopy(body)
        obj["metadata"] = {**current["metadata"], **{k: v for k, v in meta.items() if k != "resourceVersion"}}
        self.writes["replace", res.plural] += 1
        return await self._record(res, "MODIFIED", obj)

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> dict[str, Any]:
        self._fault("patch", res.plural)
        current = self.objects.get((res.plural, namespace or "", name))
        if current is None:
            raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
        rv = (patch.get("metadata") or {}).get("resourceVersion")
        if rv is not None and rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        if subresource == "status":
            obj = {**current, "status": _merge(current.get("status") or {}, patch.get("status") or {})}
        else:
            obj = _merge(current, {k: v for k, v in patch.items() if k != "status"})
            if obj.get("spec") != current.get("spec"):
                obj["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self.writes["patch", f"{res.plural}/{subresource}" if subresource else res.plural] += 1
        return await self._record(res, "MODIFIED", copy.deepcopy(obj))

    async def delete(
        self, res: Resource, name: str, namespace: str | None = None, *, precondition_uid: str | None = None
    ) -> bool:
        self._fault("delete", res.plural)
        current = self.objects.get((res.plural, namespace or "", name))
        if current is None:
            return False
        if precondition_uid and current["metadata"]["uid"] != precondition_uid:
            raise ApiError(409, "Conflict", "Precondition failed: UID in precondition does not match")
        self.writes["delete", res.plural] += 1
        await self._record(res, "DELETED", current)
        await self._collect_garbage(current["metadata"]["uid"])
        return True

    async def _collect_garbage(self, owner_uid: str) -> None:
        """What kube-controller-manager's garbage collector does for background deletion."""
        for (plural, _, _), obj in list(self.objects.items()):
            refs = obj["metadata"].get("ownerReferences") or ()
            if any(r.get("uid") == owner_uid for r in refs):
                res = Resource("", "", plural, obj.get("kind", ""), True)
                await self._record(res, "DELETED", obj)
                await self._collect_garbage(obj["metadata"]["uid"])
