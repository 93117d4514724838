"""Wiring: API discovery, caches -> work queue -> workers -> reconciler, leader election, ops endpoints.

Every replica discovers the Sandbox API, fills its caches and serves /healthz, /readyz (caches synced)
and /metrics. Only the leader runs workers and the leader-only runnables (``add_leader_runnable``,
e.g. a policy audit); a standby keeps warm caches and takes over when the Lease frees up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentgroup.ops import Ops
from controller import metrics
from controller.audit import AuditConfig, PolicyAudit
from controller.caches import Caches
from controller.events import EventClient, EventRecorder
from controller.leader import LeaderConfig, LeaderElector, LeaseClient
from controller.reconciler import Reconciler, ReconcilerConfig, Writer
from controller.workqueue import WorkQueue
from shared.kube.informer import ListWatcher
from shared.kube.raw import ApiError
from shared.kube.resources import (
    SANDBOX_CLAIM_GROUP,
    SANDBOX_CLAIMS_V1ALPHA1,
    SANDBOX_CLAIMS_V1BETA1,
    SANDBOX_GROUP,
    SANDBOXES_V1ALPHA1,
    SANDBOXES_V1BETA1,
    Resource,
)
from shared.sandboxes import API_VERSIONS

log = logging.getLogger(__name__)


class Api(Writer, LeaseClient, EventClient, ListWatcher, Protocol):
    """Every API call the controller makes (:class:`shared.kube.raw.Kube`; tests pass a fake)."""

    async def discover(self, group: str) -> list[str]: ...


LeaderRunnable = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""Runs while this replica leads; returns soon after its event is set."""

SANDBOXES = {r.version: r for r in (SANDBOXES_V1ALPHA1, SANDBOXES_V1BETA1)}
CLAIMS = {r.version: r for r in (SANDBOX_CLAIMS_V1ALPHA1, SANDBOX_CLAIMS_V1BETA1)}


@dataclass(frozen=True, slots=True)
class ManagerOptions:
    metrics_addr: str = ":8080"
    health_addr: str = ":8081"
    namespace: str | None = None
    """Watch one namespace only; None watches all."""
    sandbox_api: str | None = None
    """Force v1alpha1 or v1beta1; None picks the server's preferred one of those it serves."""
    workers: int = 16
    reconciler: ReconcilerConfig = field(default_factory=ReconcilerConfig)
    leader: LeaderConfig | None = None
    """None runs without leader election (a single replica)."""
    discovery_retry: float = 5.0
    audit: AuditConfig | None = field(default_factory=AuditConfig)
    """The leader's policy audit (controller/audit.py); None disables it."""


def choose_version(served: list[str], wanted: str | None = None) -> str | None:
    """``wanted`` if served, else the first (preferred) served version we support, else None."""
    if wanted in served:
        return wanted
    return next((v for v in served if v in API_VERSIONS), None)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Manager:
    def __init__(self, kube: Api, options: ManagerOptions, *, identity: str = "") -> None:
        self.kube = kube
        self.options = options
        self.identity = identity
        self.ops = Ops()
        self.queue = WorkQueue(metrics.CONTROLLER)
        self.caches: Caches | None = None
        self.elector: LeaderElector | None = None
        self._leader_runnables: list[LeaderRunnable] = []
        self.ops.add_readiness_check(
            "informers-synced", lambda: self.caches is not None and self.caches.synced
        )
        if options.audit is not None:
            self.add_leader_runnable(self._audit)

    def add_leader_runnable(self, runnable: LeaderRunnable) -> None:
        self._leader_runnables.append(runnable)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set (0) or leadership is lost (1); an unusable address raises OSError."""
        halt = asyncio.Event()
        code = 0

        async def main() -> None:
            nonlocal code
            try:
                code = await self._main(halt)
            finally:
                halt.set()

        async def relay() -> None:
            await stop.wait()
            halt.set()

        async with asyncio.TaskGroup() as tasks:
            relay_task = tasks.create_task(relay())
            tasks.create_task(self.ops.serve(self.options.metrics_addr, self.options.health_addr, halt))
            await main()
            relay_task.cancel()
        return code

    async def _main(self, halt: asyncio.Event) -> int:
        resources = await self._discover(halt)
        if resources is None:
            return 0
        sandboxes, claims = resources
        self.caches = caches = Caches(
            self.kube,
            sandboxes=sandboxes,
            claims=claims,
            enqueue=self.queue.add,
            namespace=self.options.namespace,
        )
        opts = self.options
        plan = dataclasses.replace(
            opts.reconciler.plan,
            sandbox_api=sandboxes.version,
            claim_api=claims.version if claims is not None else None,
        )
        reconciler = Reconciler(
            self.kube,
            caches,
            EventRecorder(self.kube, instance=self.identity),
            dataclasses.replace(opts.reconciler, plan=plan),
        )

        async def lead(stop_leading: asyncio.Event) -> None:
            await self._lead(stop_leading, caches, reconciler)

        informers = asyncio.create_task(caches.run(halt), name="caches")
        try:
            if opts.leader is None:
                await lead(halt)
                return 0
            self.elector = LeaderElector(self.kube, opts.leader)
            return 0 if await self.elector.run(halt, lead) else 1
        finally:
            halt.set()
            await informers

    async def _discover(self, halt: asyncio.Event) -> tuple[Resource, Resource | None] | None:
        """The Sandbox and SandboxClaim resources to use; waits (retrying) until Sandboxes are served."""
        while not halt.is_set():
            try:
                forced = self.options.sandbox_api
                version = forced or choose_version(await self.kube.discover(SANDBOX_GROUP))
                if version is None:
                    log.error(
                        "the Sandbox API (%s %s) is not served: install agent-sandbox or its CRDs; retrying",
                        SANDBOX_GROUP,
                        " or ".join(API_VERSIONS),
                    )
                else:
                    claim_version = choose_version(await self.kube.discover(SANDBOX_CLAIM_GROUP), version)
                    if claim_version is None:
                        log.info("SandboxClaims are not served: warm-pool agents get cold Sandboxes")
                    log.info(
                        "using Sandbox %s, SandboxClaim %s",
                        version,
                        claim_version or "-",
                        extra={"sandbox_api": version, "claim_api": claim_version},
                    )
                    return SANDBOXES[version], CLAIMS[claim_version] if claim_version else None
            except ApiError as exc:
                log.warning("API discovery failed: %s; retrying", exc)
            await _sleep_or_stop(halt, self.options.discovery_retry)
        return None

    async def _lead(self, stop_leading: asyncio.Event, caches: Caches, reconciler: Reconciler) -> None:
        synced = asyncio.create_task(caches.wait_synced())
        stopped = asyncio.create_task(stop_leading.wait())
        await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        stopped.cancel()
        if stop_leading.is_set():
            return
        for key in caches.group_keys():
            self.queue.add(key)
        workers = max(1, self.options.workers)
        metrics.MAX_CONCURRENT.labels(metrics.CONTROLLER).set(workers)
        log.info("starting %d workers", workers, extra={"workers": workers})
        tasks = [asyncio.create_task(self._worker(reconciler), name=f"worker-{i}") for i in range(workers)]
        tasks += [asyncio.create_task(r(stop_leading)) for r in self._leader_runnables]
        await stop_leading.wait()
        self.queue.shut_down()
        await asyncio.gather(*tasks)
        log.info("workers stopped")

    async def _audit(self, stop_leading: asyncio.Event) -> None:
        """The policy audit, on the AgentGroup cache the reconciler uses (started once it has synced)."""
        if self.caches is None or self.options.audit is None:
            return
        await PolicyAudit(self.kube, self.caches.groups, self.options.audit).run(stop_leading)

    async def _worker(self, reconciler: Reconciler) -> None:
        queue = self.queue
        active = metrics.ACTIVE_WORKERS.labels(metrics.CONTROLLER)
        while (key := await queue.get()) is not None:
            active.inc()
            started = time.monotonic()
            result = "success"
            try:
                after = await reconciler.reconcile(key)
            except Exception as exc:
                result = "error"
                metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
                delay = queue.add_rate_limited(key)
                retries = queue.retries(key)
                extra = {"group": key, "retries": retries, "retry_in": round(delay, 3)}
                if isinstance(exc, ApiError):
                    log.warning("reconcile failed: %s; retrying in %.1f s", exc, delay, extra=extra)
                else:
                    log.exception("reconcile failed unexpectedly; retrying in %.1f s", delay, extra=extra)
            else:
                queue.forget(key)
                if after is not None:
                    result = "requeue_after" if after > 0 else "requeue"
                    queue.add_after(key, after)
            finally:
                queue.done(key)
                active.dec()
                metrics.RECONCILE_TIME.labels(metrics.CONTROLLER).observe(time.monotonic() - started)
                metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, result).inc()
