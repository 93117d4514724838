"""Which CodeInterpreters and AgentRuntimes exist: watch-backed caches, confirmed by a GET on a miss.

The caches answer almost every lookup. A miss may only mean the watch has not delivered an object
created a moment ago (``kubectl apply -f dir/`` creates the runtime just before its group), so a
miss is confirmed with one direct GET before anyone is told the runtime does not exist. A runtime
found that way is remembered until the watch delivers it, so the GET is not repeated; concurrent
misses for the same runtime share one GET.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Collection
from typing import Any, Protocol

from shared.kube.informer import EventType, Informer, ListWatcher, object_key
from shared.kube.raw import ApiError
from shared.kube.resources import RUNTIMES_BY_KIND, Resource
from shared.rules import RuntimeKey
from webhook import metrics
from webhook.admission import RuntimeLookup

log = logging.getLogger(__name__)

# The API server gives a webhook 5 s at most (timeoutSeconds); leave room to answer.
GET_TIMEOUT = 2.5
# How long a runtime confirmed by a GET counts as existing without the watch having delivered it.
CONFIRMED_TTL = 60.0

IndexKey = tuple[str, str, str]
"""(namespace, kind, name)"""


class RuntimeSource(ListWatcher, Protocol):
    """What the index needs from :class:`shared.kube.raw.Kube` (tests pass fakes)."""

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None: ...


class RuntimeIndex:
    """Answers "does this runtime exist in this namespace?" for the RuntimeNotFound rule."""

    def __init__(self, kube: RuntimeSource, *, get_timeout: float = GET_TIMEOUT) -> None:
        self._kube = kube
        self._get_timeout = get_timeout
        self.informers = {
            kind: Informer(kube, res, handler=functools.partial(self._forget_confirmed, kind))
            for kind, res in RUNTIMES_BY_KIND.items()
        }
        self._confirmed: dict[IndexKey, float] = {}  # expiry (loop time) of runtimes a GET found
        self._pending: dict[IndexKey, asyncio.Task[bool]] = {}
        self._cached = metrics.RUNTIME_LOOKUPS.labels("cached")

    @property
    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers.values())

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(inf.run(stop) for inf in self.informers.values()))

    def _forget_confirmed(self, kind: str, _event: EventType, obj: dict[str, Any]) -> None:
        # Any event about the object means the cache now knows it (or knows it is gone).
        namespace, name = object_key(obj)
        self._confirmed.pop((namespace, kind, name), None)

    def _known(self, key: IndexKey, now: float) -> bool:
        namespace, kind, name = key
        if self.informers[kind].get(name, namespace) is not None:
            return True
        expiry = self._confirmed.get(key)
        if expiry is None:
            return False
        if expiry > now:
            return True
        del self._confirmed[key]
        return False

    async def lookup(self, namespace: str, refs: Collection[RuntimeKey]) -> RuntimeLookup:
        """Which of ``refs`` exist in ``namespace``; refs of an unknown kind or without a name never do."""
        now = asyncio.get_running_loop().time()
        found: set[RuntimeKey] = set()
        misses: list[IndexKey] = []
        for kind, name in refs:
            if kind not in self.informers or not name:
                continue
            key = (namespace, kind, name)
            if self._known(key, now):
                found.add((kind, name))
            else:
                misses.append(key)
        self._cached.inc(len(found))
        if not misses:
            return RuntimeLookup(frozenset(found))
        failed: dict[RuntimeKey, str] = {}
        results = await asyncio.gather(*(self._confirm(key) for key in misses), return_exceptions=True)
        for (_, kind, name), result in zip(misses, results, strict=True):
            if isinstance(result, BaseException):
                failed[(kind, name)] = str(result) or type(result).__name__
            elif result:
                found.add((kind, name))
        return RuntimeLookup(frozenset(found), failed)

    def _confirm(self, key: IndexKey) -> asyncio.Future[bool]:
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._get(key), name=f"confirm:{'/'.join(key)}")
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        # One caller giving up (its client went away) must not cancel the GET the others wait for.
        return asyncio.shield(task)

    async def _get(self, key: IndexKey) -> bool:
        namespace, kind, name = key
        try:
            async with asyncio.timeout(self._get_timeout):
                obj = await self._kube.get(RUNTIMES_BY_KIND[kind], name, namespace)
        except (ApiError, TimeoutError) as exc:
            metrics.RUNTIME_LOOKUPS.labels("error").inc()
            reason = str(exc) or f"no answer from the API server within {self._get_timeout:g} s"
            log.warning("cannot check %s %s/%s: %s", kind, namespace, name, reason)
            raise LookupError(reason) from exc
        if obj is None:
            metrics.RUNTIME_LOOKUPS.labels("not_found").inc()
            return False
        metrics.RUNTIME_LOOKUPS.labels("confirmed").inc()
        if self.informers[kind].get(name, namespace) is None:
            self._confirmed[key] = asyncio.get_running_loop().time() + CONFIRMED_TTL
        return True
