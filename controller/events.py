"""Kubernetes Events on AgentGroups (what ``kubectl describe ag`` lists), best effort and de-duplicated.

A plan may name the same event again before the status that reflects it is read back (a lagging
cache, a retried reconcile, a conflict reported by every plan); like client-go's event correlator,
an identical event for the same object and spec generation within ``window`` seconds is sent once.
Failing to send an event never fails a reconcile.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.kube.raw import ApiError
from shared.kube.resources import EVENTS, Resource
from shared.planner import GroupEvent
from shared.sandboxes import rfc3339

log = logging.getLogger(__name__)

COMPONENT = "agentgroup-controller"
MAX_MESSAGE = 1024


class EventClient(Protocol):
    async def create(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]: ...


class EventRecorder:
    def __init__(
        self,
        kube: EventClient,
        *,
        instance: str = "",
        window: float = 600.0,
        max_remembered: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.instance = instance
        self.window = window
        self.max_remembered = max_remembered
        self._clock = clock
        self._wall = wall
        self._sent: OrderedDict[tuple[str, str, str, str], float] = OrderedDict()

    async def emit(self, involved: dict[str, Any], event: GroupEvent) -> bool:
        """Send ``event`` about ``involved`` (an object's apiVersion, kind, metadata); False if skipped."""
        meta = involved.get("metadata") or {}
        key = (f"{meta.get('uid', '')}/{meta.get('generation', '')}", event.type, event.reason, event.message)
        now = self._clock()
        last = self._sent.get(key)
        if last is not None and now - last < self.window:
            return False
        self._sent[key] = now
        self._sent.move_to_end(key)
        while len(self._sent) > self.max_remembered:
            self._sent.popitem(last=False)
        stamp = rfc3339(self._wall())
        namespace = str(meta.get("namespace", ""))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:MAX_MESSAGE],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.kube.create(EVENTS, body, namespace)
        except ApiError as exc:
            log.warning(
                "could not record event %s on %s/%s: %s",
                event.reason,
                namespace,
                meta.get("name"),
                exc,
                extra={"group": f"{namespace}/{meta.get('name')}"},
            )
            return False
        return True
