"""A list+watch cache of one resource, resuming from ``resourceVersion`` and relisting on 410 Gone."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Protocol

from prometheus_client import Counter, Gauge

from shared.kube.raw import ApiError
from shared.kube.resources import Resource

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Handler = Callable[[EventType, dict[str, Any]], None]
Key = tuple[str, str]

OBJECTS = Gauge("agentgroup_informer_objects", "Objects in an informer's cache.", ["resource"])
SYNCED = Gauge("agentgroup_informer_synced", "1 once an informer has completed its first list.", ["resource"])
RELISTS = Counter(
    "agentgroup_informer_relists_total",
    "Full relists after the first list, by reason.",
    ["resource", "reason"],
)


class ListWatcher(Protocol):
    """What an :class:`Informer` needs from :class:`shared.kube.raw.Kube` (tests pass fakes)."""

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]: ...


def object_key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _resource_version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    """Keeps an in-memory copy of the objects of ``res`` and reports every change to ``handler``.

    ``run`` lists, then watches from the list's ``resourceVersion`` (with bookmarks), re-watching
    from the last version seen whenever a watch ends. When that version is too old (410 Gone) it
    relists and diffs against the cache, so objects deleted meanwhile are reported DELETED and changed
    ones MODIFIED. Any other failure is retried with capped, jittered exponential backoff; ``run``
    only returns once ``stop`` is set. Cached objects are shared with the handler: treat them as
    read-only.
    """

    def __init__(
        self,
        kube: ListWatcher,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        handler: Handler | None = None,
        name: str | None = None,
        watch_timeout: int = 300,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.kube = kube
        self.res = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.handler = handler
        self.name = name or res.plural
        self.watch_timeout = watch_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.synced = asyncio.Event()
        self.resource_version = ""
        self._cache: dict[Key, dict[str, Any]] = {}
        self._failures = 0
        self._objects = OBJECTS.labels(self.name)
        self._synced_gauge = SYNCED.labels(self.name)
        self._objects.set(0)
        self._synced_gauge.set(0)

    # --- reading the cache ------------------------------------------------------------------------

    def get(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The cached object; ``namespace`` defaults to the informer's own namespace."""
        ns = namespace if namespace is not None else self.namespace
        if not self.res.namespaced:
            ns = ""
        return self._cache.get((ns or "", name))

    def items(self) -> list[dict[str, Any]]:
        return list(self._cache.values())

    def __len__(self) -> int:
        return len(self._cache)

    # --- running ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """List and watch until ``stop`` is set; never raises for API or connection failures."""
        work = asyncio.create_task(self._loop(), name=f"informer:{self.name}")
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()
            stopped.cancel()
            await asyncio.gather(work, stopped, return_exceptions=True)

    async def _loop(self) -> None:
        relist: str | None = "initial"
        while True:
            try:
                if relist is not None:
                    await self._list(relist)
                    relist = None
                await self._watch()
            except ApiError as exc:
                if exc.is_gone and relist is None:  # a 410 from a list (expired continue) backs off
                    log.info(
                        "%s: resourceVersion %s is too old, relisting",
                        self.name,
                        self.resource_version,
                        extra={"resource": self.name},
                    )
                    relist = "gone"
                    continue
                self._failures += 1
                verb = "list" if relist else "watch"
                log.warning("%s: %s failed: %s", self.name, verb, exc, extra={"resource": self.name})
            except Exception as exc:  # a malformed response or a bug: log it, back off, carry on
                self._failures += 1
                log.exception("%s: unexpected failure: %s", self.name, exc, extra={"resource": self.name})
            else:
                continue
            await asyncio.sleep(self._backoff())

    def _backoff(self) -> float:
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(self._failures - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)

    async def _list(self, reason: str) -> None:
        items, rv = await self.kube.list(self.res, self.namespace, self.label_selector)
        fresh = {object_key(obj): obj for obj in items}
        old, self._cache = self._cache, fresh
        self.resource_version = rv
        self._failures = 0
        self._objects.set(len(fresh))
        if reason != "initial":
            RELISTS.labels(self.name, reason).inc()
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj)
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", obj)
            elif _resource_version(before) != _resource_version(obj):
                self._emit("MODIFIED", obj)
        if not self.synced.is_set():
            self.synced.set()
            self._synced_gauge.set(1)
            log.info("%s: synced %d objects", self.name, len(fresh), extra={"resource": self.name})

    async def _watch(self) -> None:
        """One watch from ``resource_version`` until the server ends it."""
        if not self.resource_version:
            raise ApiError(410, "Expired", "no resourceVersion to watch from")
        loop = asyncio.get_running_loop()
        started = loop.time()
        delivered = False
        stream = self.kube.watch(
            self.res,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            allow_bookmarks=True,
            timeout_seconds=self.watch_timeout,
        )
        try:
            async for event in stream:
                self._apply(event)
                delivered = True
                self._failures = 0
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if not delivered and loop.time() - started < 1.0:
            # A server that ends every watch at once must not make us spin.
            raise ApiError(0, "WatchClosed", "the watch ended immediately without events")

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without an object: {event!r:.200}")
        if kind == "ERROR":
            raise ApiError.from_status(obj)
        rv = _resource_version(obj)
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        key = object_key(obj)
        if kind in ("ADDED", "MODIFIED"):
            existed = key in self._cache
            self._cache[key] = obj
            self._emit("MODIFIED" if existed else "ADDED", obj)
        elif kind == "DELETED":
            self._cache.pop(key, None)
            self._emit("DELETED", obj)
        else:
            log.warning("%s: ignoring watch event of type %r", self.name, kind, extra={"resource": self.name})
            return
        if rv:
            self.resource_version = rv
        self._objects.set(len(self._cache))

    def _emit(self, kind: EventType, obj: dict[str, Any]) -> None:
        if self.handler is None:
            return
        try:
            self.handler(kind, obj)
        except Exception:
            ns, name = object_key(obj)
            log.exception(
                "%s: handler failed on %s %s",
                self.name,
                kind,
                f"{ns}/{name}" if ns else name,
                extra={"resource": self.name},
            )
