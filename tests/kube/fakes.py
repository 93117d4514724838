"""An in-memory API with resourceVersions and a compactable event history, for informer tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from shared.kube.raw import ApiError
from shared.kube.resources import Resource


def configmap(name: str, namespace: str = "ns", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


class FakeApi:
    """Objects of one resource, a global resourceVersion counter and the events since ``compacted``.

    A watch replays the history after its resourceVersion, then follows new writes until
    :meth:`end_watches`; while :attr:`gate` is clear, new watches wait before they start.
    Failures are injected with :attr:`list_errors` / :attr:`watch_errors` (raised by the next
    calls, in order); a watch from before :attr:`compacted` gets 410 Gone, raised or (with
    ``gone_as_event``) sent as an ERROR event, as the API server does.
    """

    def __init__(self, *, gone_as_event: bool = False) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, dict[str, Any]]] = []
        self.rv = 100
        self.compacted = 0
        self.gone_as_event = gone_as_event
        self.list_errors: list[ApiError] = []
        self.watch_errors: list[ApiError] = []
        self.lists = 0
        self.watches: list[str | None] = []
        self.bookmarks_requested: list[bool] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self._changed = asyncio.Condition()
        self._generation = 0

    # --- writes, as a client of the API would make them -----------------------------------------

    async def _record(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if kind == "DELETED":
            self.objects.pop(key)
        else:
            self.objects[key] = obj
        self.history.append((self.rv, {"type": kind, "object": obj}))
        async with self._changed:
            self._changed.notify_all()
        return obj

    async def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        return await self._record("MODIFIED" if key in self.objects else "ADDED", obj)

    async def remove(self, name: str, namespace: str = "ns") -> dict[str, Any]:
        return await self._record("DELETED", self.objects[(namespace, name)])

    async def bookmark(self) -> None:
        self.rv += 1
        self.history.append(
            (self.rv, {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.rv)}}})
        )
        async with self._changed:
            self._changed.notify_all()

    def compact(self) -> None:
        """Forget the history: a watch from any earlier resourceVersion is now 410 Gone."""
        self.compacted = self.rv
        self.history.clear()

    async def end_watches(self) -> None:
        """End every open watch, as the server does at its timeout."""
        self._generation += 1
        async with self._changed:
            self._changed.notify_all()

    # --- the ListWatcher protocol -----------------------------------------------------------------

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        if self.list_errors:
            raise self.list_errors.pop(0)
        return list(self.objects.values()), str(self.rv)

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        self.watches.append(resource_version)
        self.bookmarks_requested.append(allow_bookmarks)
        await self.gate.wait()
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        since = int(resource_version or 0)
        if since < self.compacted:
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
            if self.gone_as_event:
                yield {"type": "ERROR", "object": gone}
                return
            raise ApiError.from_status(gone)
        generation = self._generation
        while True:
            for rv, event in self.history:
                if rv > since:
                    since = rv
                    yield event
            async with self._changed:
                if generation != self._generation:
                    return
                if not any(rv > since for rv, _ in self.history):
                    await self._changed.wait()
                if generation != self._generation:
                    return
