"""The thin executor: gather one group's inputs from the caches, call the pure planner, carry out its plan.

Order of writes: retry bookkeeping (group annotations), deletes, creates, status, events. Each is
idempotent on its own (deterministic names, create-if-absent, deletes with a uid precondition), so a
crash between any two leaves nothing a rerun cannot finish.

Status writes: a transition (phase, generation, a condition's status or reason) is written at once;
a change of counts or per-agent details alone is batched, written at most once per
``status_interval`` per group, so a group that starts up quickly costs two status writes in total.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from controller import metrics
from controller.caches import Caches, split_key
from controller.events import EventRecorder
from shared.kube.raw import ApiError, Patcher
from shared.kube.resources import (
    AGENT_GROUPS,
    RUNTIMES_BY_KIND,
    SANDBOX_CLAIMS_V1ALPHA1,
    SANDBOX_CLAIMS_V1BETA1,
    SANDBOXES_V1ALPHA1,
    SANDBOXES_V1BETA1,
    Resource,
)
from shared.models import AGENT_RUNTIME, AgentGroup, AgentRuntime, CodeInterpreter, Runtime, Sandbox
from shared.planner import Create, Delete, Plan, PlanConfig, plan, sandbox_names
from shared.rules import RuntimeKey, parse
from shared.sandboxes import CLAIM_KIND, SANDBOX_KIND, SandboxClaim
from shared.status import Change, change, to_json

log = logging.getLogger(__name__)

_RESOURCES = {
    (r.api_version, r.kind): r
    for r in (SANDBOXES_V1ALPHA1, SANDBOXES_V1BETA1, SANDBOX_CLAIMS_V1ALPHA1, SANDBOX_CLAIMS_V1BETA1)
}


class Writer(Patcher, Protocol):
    """The API calls the reconciler makes (:class:`shared.kube.raw.Kube`; tests pass a fake)."""

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None: ...

    async def create(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]: ...

    async def delete(
        self, res: Resource, name: str, namespace: str | None = None, *, precondition_uid: str | None = None
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    plan: PlanConfig = field(default_factory=PlanConfig)
    status_interval: float = 5.0
    """Seconds between two status writes of one group that only report progress."""


def _resource(api_version: str, kind: str) -> Resource:
    try:
        return _RESOURCES[api_version, kind]
    except KeyError:
        raise ValueError(f"no resource for {api_version} {kind}") from None


class Reconciler:
    def __init__(
        self,
        kube: Writer,
        caches: Caches,
        recorder: EventRecorder,
        config: ReconcilerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.caches = caches
        self.recorder = recorder
        self.config = config
        self._clock = clock
        self._wall = wall
        self._status_written: dict[str, float] = {}

    async def reconcile(self, key: str) -> float | None:
        """Converge one group; returns when to look again (seconds), or None. API errors propagate."""
        namespace, name = split_key(key)
        cached = self.caches.groups.get(name, namespace)
        if cached is None or (cached.get("metadata") or {}).get("deletionTimestamp"):
            # Gone or going: the garbage collector deletes its Sandboxes through the owner references.
            self.caches.expect.forget_group(namespace, name)
            self._status_written.pop(key, None)
            return None
        raw = self.caches.expect.group_view(cached)
        group, findings = parse(raw)
        if group is None:
            text = "; ".join(str(f) for f in findings)
            log.error("cannot read AgentGroup %s: %s", key, text, extra={"group": key})
            return None
        runtimes = await self._runtimes(group)
        sandboxes, claims = self._observed(group)
        result = plan(group, runtimes, sandboxes, self._wall(), claims=claims, config=self.config.plan)
        deferred = await self._carry_out(key, raw, group, result)
        waits = [result.requeue_after.total_seconds()] if result.requeue_after is not None else []
        if deferred is not None:
            waits.append(deferred)
        return max(0.0, min(waits)) if waits else None

    # --- gathering ----------------------------------------------------------------------------------

    async def _runtimes(self, group: AgentGroup) -> dict[RuntimeKey, Runtime]:
        """The group's runtimes; a cache miss is confirmed with a GET, never taken as "missing"."""
        namespace = group.metadata.namespace
        found: dict[RuntimeKey, Runtime] = {}
        for agent in group.spec.agents:
            kind, name = agent.runtime_ref.kind, agent.runtime_ref.name
            res = RUNTIMES_BY_KIND.get(kind)
            if res is None or not name or (kind, name) in found:
                continue
            obj = self.caches.runtimes[kind].get(name, namespace)
            if obj is None:
                obj = await self.kube.get(res, name, namespace)
            if obj is None:
                continue
            try:
                model = AgentRuntime if kind == AGENT_RUNTIME else CodeInterpreter
                found[kind, name] = model.model_validate(obj)
            except ValidationError as exc:
                log.error(
                    "%s %s/%s does not parse: %s",
                    kind,
                    namespace,
                    name,
                    exc,
                    extra={"group": f"{namespace}/{group.metadata.name}"},
                )
        return found

    def _view(self, kind: str, namespace: str, names: set[str]) -> list[dict[str, Any]]:
        informer = self.caches.informer_for(kind)
        if informer is None:
            return []
        views = (
            self.caches.expect.view(kind, namespace, n, informer.get(n, namespace)) for n in sorted(names)
        )
        return [v for v in views if v is not None]

    def _observed(self, group: AgentGroup) -> tuple[list[Sandbox], list[SandboxClaim]]:
        """The group's Sandboxes and claims: at its names or owned by it, plus the Sandboxes claimed."""
        namespace, uid = group.metadata.namespace, group.metadata.uid
        names = set(sandbox_names(group))
        claims = [
            SandboxClaim.model_validate(obj)
            for obj in self._view(
                CLAIM_KIND, namespace, names | self.caches.owned[CLAIM_KIND].names(namespace, uid)
            )
        ]
        given = {c.status.sandbox.sandbox_name for c in claims} - {""}
        owned = self.caches.owned[SANDBOX_KIND].names(namespace, uid)
        sandboxes = [
            Sandbox.model_validate(obj) for obj in self._view(SANDBOX_KIND, namespace, names | owned | given)
        ]
        return sandboxes, claims

    # --- carrying out -------------------------------------------------------------------------------

    async def _carry_out(self, key: str, raw: dict[str, Any], group: AgentGroup, p: Plan) -> float | None:
        """Carry out ``p``; returns in how many seconds a batched status change is due, if one is."""
        namespace, name = split_key(key)
        if p.annotations is not None:
            patched = await self.kube.patch(
                AGENT_GROUPS, name, {"metadata": {"annotations": dict(p.annotations)}}, namespace
            )
            self.caches.expect.wrote_group(patched)
            raw = patched
        for d in p.deletes:
            await self._delete(key, raw, d)
        for c in p.creates:
            await self._create(key, raw, c)
        how = change(group.status, p.status)
        deferred = None
        if how is Change.PROGRESS:
            deferred = self._progress_wait(key)
        if how is Change.TRANSITION or (how is Change.PROGRESS and deferred is None):
            try:
                written = await self.kube.patch(
                    AGENT_GROUPS, name, {"status": to_json(p.status)}, namespace, subresource="status"
                )
            except ApiError as exc:
                if exc.is_not_found:
                    return None  # deleted meanwhile
                raise
            self.caches.expect.wrote_group(written)
            self._status_written[key] = self._clock()
            metrics.STATUS_WRITES.labels(how.name.lower()).inc()
            log.info(
                "status: %s, %d of %d Sandboxes Ready",
                p.status.phase,
                p.status.ready_agents,
                p.status.total_agents,
                extra={"group": key, "change": how.name.lower()},
            )
            raw = written
        for event in p.events:
            await self.recorder.emit(raw, event)
        return deferred

    async def _delete(self, key: str, group: dict[str, Any], d: Delete) -> None:
        namespace, _ = split_key(key)
        try:
            await self.kube.delete(
                _resource(d.api_version, d.kind), d.name, namespace, precondition_uid=d.uid
            )
        except ApiError as exc:
            if not exc.is_conflict:
                raise
            return  # another incarnation holds the name now: the next plan looks at it
        self.caches.expect.deleted(d.kind, namespace, d.name, d.uid)
        metrics.SANDBOX_WRITES.labels(d.kind, "delete").inc()
        log.info("deleted %s %s", d.kind, d.name, extra={"group": key, "sandbox": d.name})
        await self.recorder.emit(group, d.event)

    async def _create(self, key: str, group: dict[str, Any], c: Create) -> None:
        namespace, _ = split_key(key)
        kind, name = c.body["kind"], c.body["metadata"]["name"]
        try:
            created = await self.kube.create(_resource(c.body["apiVersion"], kind), c.body, namespace)
        except ApiError as exc:
            if not exc.is_already_exists:
                raise
            return  # made by an earlier run whose watch event is on its way, or someone else's
        self.caches.expect.created(kind, created)
        metrics.SANDBOX_WRITES.labels(kind, "create").inc()
        log.info("created %s %s", kind, name, extra={"group": key, "sandbox": name})
        await self.recorder.emit(group, c.event)

    def _progress_wait(self, key: str) -> float | None:
        """None when a progress-only status change may be written now, else the seconds until it may."""
        last = self._status_written.get(key)
        if last is None:
            return None
        wait = last + self.config.status_interval - self._clock()
        return wait if wait > 0 else None
