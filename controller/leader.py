"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's rules, on the raw API client.

Candidates try to take the Lease every ``retry_period``. A Lease held by another identity counts as
taken until ``lease_duration`` has passed on *our* clock since we last saw it change (so clock skew
between replicas does not matter). The leader renews every ``retry_period``; when it cannot renew
within ``renew_deadline`` it stops leading. On a graceful stop the leader releases the Lease (empty
holder), so a standby replica takes over at its next try instead of waiting for the Lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from controller import metrics
from shared.kube.raw import ApiError
from shared.kube.resources import LEASES, Resource

log = logging.getLogger(__name__)


class LeaseClient(Protocol):
    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None: ...

    async def create(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]: ...

    async def replace(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class LeaderConfig:
    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class LeaderElector:
    def __init__(
        self,
        kube: LeaseClient,
        config: LeaderConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.config = config
        self._clock = clock
        self._wall = wall
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self.is_leader = False
        self._status = metrics.LEADER.labels(config.name)
        self._status.set(0)

    async def run(
        self, stop: asyncio.Event, lead: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
    ) -> bool:
        """Campaign until ``stop``; while leading, run ``lead(stop_leading)``.

        Returns True after a graceful stop (the Lease released), False when leadership was lost:
        ``lead`` has then been told to stop and has returned, and the caller should exit.
        """
        cfg = self.config
        while not stop.is_set():
            if await self._try_acquire_or_renew():
                break
            await _sleep_or_stop(stop, cfg.retry_period)
        if stop.is_set():
            return True
        log.info("became leader of lease %s/%s", cfg.namespace, cfg.name, extra={"identity": cfg.identity})
        self._set_leader(True)
        stop_leading = asyncio.Event()
        leading = asyncio.create_task(lead(stop_leading), name="leading")
        lost = False
        try:
            while not stop.is_set() and not leading.done():
                await _sleep_or_stop(stop, cfg.retry_period)
                if stop.is_set():
                    break
                if not await self._renew(stop):
                    lost = not stop.is_set()
                    break
        finally:
            stop_leading.set()
            await leading
        if lost:
            log.error(
                "lost the lease %s/%s: stopping", cfg.namespace, cfg.name, extra={"identity": cfg.identity}
            )
            self._set_leader(False)
            return False
        await self.release()
        return True

    async def _renew(self, stop: asyncio.Event) -> bool:
        """Renew, retrying every ``retry_period`` until ``renew_deadline`` after the last renewal."""
        deadline = self._renewed_at + self.config.renew_deadline
        while not stop.is_set():
            if await self._try_acquire_or_renew():
                return True
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            await _sleep_or_stop(stop, min(self.config.retry_period, remaining))
        return True

    def _set_leader(self, leading: bool) -> None:
        self.is_leader = leading
        self._status.set(1 if leading else 0)

    async def _try_acquire_or_renew(self) -> bool:
        cfg = self.config
        now = _micro_time(self._wall())
        try:
            lease = await self.kube.get(LEASES, cfg.name, cfg.namespace)
            if lease is None:
                await self.kube.create(LEASES, self._lease({}, now, transitions=0), cfg.namespace)
                self._renewed_at = self._clock()
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            record = (
                holder,
                spec.get("renewTime"),
                spec.get("acquireTime"),
                spec.get("leaseDurationSeconds"),
            )
            if record != self._observed:
                self._observed, self._observed_at = record, self._clock()
            duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
            if holder and holder != cfg.identity and self._clock() < self._observed_at + duration:
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (holder != cfg.identity)
            body = self._lease(lease, now, transitions=transitions)
            if holder == cfg.identity and spec.get("acquireTime"):
                body["spec"]["acquireTime"] = spec["acquireTime"]
            await self.kube.replace(LEASES, body, cfg.namespace)
        except ApiError as exc:
            if not (exc.is_conflict or exc.is_already_exists):
                log.warning("lease %s/%s: %s", cfg.namespace, cfg.name, exc, extra={"identity": cfg.identity})
            return False
        self._renewed_at = self._clock()
        return True

    def _lease(self, current: dict[str, Any], now: str, *, transitions: int) -> dict[str, Any]:
        cfg = self.config
        meta = {"name": cfg.name, "namespace": cfg.namespace}
        rv = (current.get("metadata") or {}).get("resourceVersion")
        if rv:
            meta["resourceVersion"] = rv
        return {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": meta,
            "spec": {
                "holderIdentity": cfg.identity,
                "leaseDurationSeconds": round(cfg.lease_duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    async def release(self) -> None:
        """Give the Lease up (empty holder, 1 s duration) if we hold it; errors are only logged."""
        cfg = self.config
        was_leader = self.is_leader
        self._set_leader(False)
        if not was_leader:
            return
        try:
            lease = await self.kube.get(LEASES, cfg.name, cfg.namespace)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != cfg.identity:
                return
            now = _micro_time(self._wall())
            body = self._lease(lease, now, transitions=int(spec.get("leaseTransitions") or 0))
            body["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
            await self.kube.replace(LEASES, body, cfg.namespace)
            log.info("released the lease %s/%s", cfg.namespace, cfg.name, extra={"identity": cfg.identity})
        except ApiError as exc:
            log.warning("could not release the lease %s/%s: %s", cfg.namespace, cfg.name, exc)
