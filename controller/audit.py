"""The policy audit: every existing AgentGroup against every AgentGroupPolicy, reported on each policy.

It runs on the leader only (a :data:`controller.manager.LeaderRunnable`). Groups come from the
manager's AgentGroup cache, so nothing watches them twice; policies and namespace labels come from
two informers of the audit's own, which start when leadership starts (both lists are small). The
evaluation is :func:`shared.audit.audit`, the code admission and ``agentgroup validate`` use too.

An audit runs

- once the caches have synced (on taking over leadership);
- every :attr:`AuditConfig.interval` seconds (``--audit-interval``);
- :attr:`AuditConfig.debounce` seconds after a policy is created or deleted or its spec changes (a new
  ``metadata.generation``; our own status writes do not count), or a namespace's labels change. A
  burst of changes (``kubectl apply -f examples/policies/``) costs one audit.

What is written, and when. Each policy's ``status`` (a merge patch of the status subresource) holds
``auditTimestamp``, ``observedGeneration``, ``totalViolations`` and the first 20 ``violations``
(namespace, name, field, message), in (namespace, name) order so that a steady cluster gives the same
list every time. It is written only when

- the result differs from the status on the object (another total, another list, or a new
  generation of the policy evaluated), or
- the status's ``auditTimestamp`` is older than :attr:`AuditConfig.refresh_intervals` intervals
  (10 minutes by default), so the timestamp still shows that the audit is alive.

A steady cluster therefore costs one write per policy per refresh, not one per audit. The time of
every audit, written or not, is the metric ``agentgroup_policy_audit_last_run_timestamp_seconds``.
A failed write (or an unexpected error) is logged and the audit runs again after
:attr:`AuditConfig.retry` seconds. A result field the API server prunes from the status (a CRD older
than this controller: Helm does not upgrade CRDs) is left out of the comparison once a write shows it.

Metrics: ``agentgroup_policy_violations{policy, action}`` (the leader's latest audit; the series go
away with the policy, and when this replica stops leading), ``agentgroup_policy_audit_duration_seconds``,
``agentgroup_policy_status_writes_total{reason}``.

With ``--namespace`` the controller caches the groups of one namespace only, and so audits only those.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from controller import metrics
from shared.audit import AuditResult, audit
from shared.kube.informer import EventType, Informer, Key, ListWatcher, object_key
from shared.kube.raw import ApiError, Patcher
from shared.kube.resources import AGENT_GROUP_POLICIES, NAMESPACES
from shared.models import AgentGroup
from shared.policy import AgentGroupPolicy
from shared.sandboxes import parse_time, rfc3339

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# The parts of a policy's status that make up the audit's result (everything but the timestamp).
RESULT_FIELDS = ("observedGeneration", "totalViolations", "violations")


class AuditApi(ListWatcher, Patcher, Protocol):
    """The API calls the audit makes (:class:`shared.kube.raw.Kube`; tests pass a fake)."""


@dataclass(frozen=True, slots=True)
class AuditConfig:
    interval: float = 60.0
    """Seconds between two audits (``--audit-interval``); must be positive (0 disables the audit)."""
    debounce: float = 0.5
    """Seconds from a policy or namespace-label change to the audit it triggers."""
    refresh_intervals: int = 10
    """An unchanged status is written again once its ``auditTimestamp`` is this many intervals old."""
    retry: float = 5.0
    """Seconds before the next audit after a status write failed (at most ``interval``)."""

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("the audit interval must be positive")

    @property
    def refresh(self) -> timedelta:
        return timedelta(seconds=self.interval * self.refresh_intervals)


class _Parsed(Generic[M]):
    """Cached objects parsed into models, each parsed again only when its resourceVersion changes.

    An object that does not parse is logged once per version and left out.
    """

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self._memo: dict[Key, tuple[str, M | None]] = {}

    def parse(self, objects: Iterable[dict[str, Any]]) -> list[M]:
        fresh: dict[Key, tuple[str, M | None]] = {}
        for obj in objects:
            key = object_key(obj)
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            entry = self._memo.get(key)
            if entry is None or entry[0] != version:
                entry = (version, self._validate(key, obj))
            fresh[key] = entry
        self._memo = fresh
        return [model for _, model in fresh.values() if model is not None]

    def _validate(self, key: Key, obj: dict[str, Any]) -> M | None:
        try:
            return self.model.model_validate(obj)
        except ValidationError as exc:
            name = "/".join(part for part in key if part)
            log.warning(
                "%s %s does not parse and is not audited: %s",
                self.model.__name__,
                name,
                exc.errors()[0].get("msg", exc) if exc.errors() else exc,
            )
            return None


def _result(status: dict[str, Any], fields: Iterable[str] = RESULT_FIELDS) -> dict[str, Any]:
    """The parts of ``status`` that make up the result (a missing list of violations is an empty one)."""
    out = {field: status.get(field) for field in fields}
    if "violations" in out:
        out["violations"] = out["violations"] or []
    return out


async def _wait_any(events: Iterable[asyncio.Event], seconds: float | None) -> None:
    """Return once one of ``events`` is set, or after ``seconds`` (None: no limit)."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class PolicyAudit:
    """One leadership term of the audit: :meth:`run` until the ``stop`` event it is given is set."""

    def __init__(
        self,
        kube: AuditApi,
        groups: Informer,
        config: AuditConfig | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.groups = groups
        self.config = config or AuditConfig()
        self.clock = clock
        self.policies = Informer(kube, AGENT_GROUP_POLICIES, handler=self._on_policy, name="audit-policies")
        self.namespaces = Informer(kube, NAMESPACES, handler=self._on_namespace, name="audit-namespaces")
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self._generations: dict[str, tuple[str, int]] = {}  # policy name -> (uid, generation)
        self._parsed_policies = _Parsed(AgentGroupPolicy)
        self._parsed_groups = _Parsed(AgentGroup)
        # Policy name -> (its resourceVersion before our write, the status we wrote): our own write
        # counts as the current status until the informer has seen a newer version of the policy.
        self._written: dict[str, tuple[str, dict[str, Any]]] = {}
        self._series: set[tuple[str, str]] = set()
        # The result fields the API server keeps: a CRD older than this controller (Helm does not
        # upgrade CRDs) prunes the ones it does not know, which must not count as a change forever.
        self._kept: tuple[str, ...] = RESULT_FIELDS
        self._changed = False
        self._wake = asyncio.Event()

    # --- triggers --------------------------------------------------------------------------------

    def _trigger(self) -> None:
        self._changed = True
        self._wake.set()

    def _on_policy(self, event: EventType, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if event == "DELETED":
            self._generations.pop(name, None)
            self._written.pop(name, None)
            self._trigger()
            return
        seen = (str(meta.get("uid") or ""), int(meta.get("generation") or 0))
        if self._generations.get(name) != seen:  # created, or its spec changed (not our status writes)
            self._generations[name] = seen
            self._trigger()

    def _on_namespace(self, event: EventType, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if event == "DELETED":
            self.namespace_labels.pop(name, None)  # its groups go with it
            return
        raw = meta.get("labels")
        labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        before = self.namespace_labels.get(name)
        self.namespace_labels[name] = labels
        if before is not None and before != labels:
            self._trigger()

    # --- running ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Audit on every trigger until ``stop`` is set (leadership lost or the process stopping)."""
        halt = asyncio.Event()
        informers = asyncio.gather(self.policies.run(halt), self.namespaces.run(halt))
        try:
            await self._loop(stop)
        finally:
            halt.set()
            await informers
            for labels in self._series:
                metrics.POLICY_VIOLATIONS.remove(*labels)
            self._series.clear()

    async def _loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for synced in (self.policies.synced, self.namespaces.synced):
            await _wait_any([stop, synced], None)
            if stop.is_set():
                return
        log.info(
            "policy audit started: every %g s and on policy changes",
            self.config.interval,
            extra={"interval": self.config.interval},
        )
        due = loop.time()  # the first audit at once
        while not stop.is_set():
            if self._changed:
                await _wait_any([stop], self.config.debounce)  # let a burst of changes settle
            elif loop.time() < due:
                self._wake.clear()
                await _wait_any([stop, self._wake], due - loop.time())
                continue
            if stop.is_set():
                return
            self._changed = False
            try:
                ok = await self.audit_once()
            except Exception:  # a bug must not end the audit for the rest of the leadership term
                log.exception("the policy audit failed unexpectedly; retrying in %g s", self.config.retry)
                ok = False
            pause = self.config.interval if ok else min(self.config.interval, self.config.retry)
            due = loop.time() + pause

    async def audit_once(self) -> bool:
        """Evaluate, export and write what changed; False when a status write failed."""
        started = time.perf_counter()
        policies = self._parsed_policies.parse(self.policies.items())
        groups = self._parsed_groups.parse(self.groups.items())
        results = audit(policies, groups, self.namespace_labels)
        now = self.clock()
        ok = True
        series: set[tuple[str, str]] = set()
        for policy in policies:
            name = policy.metadata.name
            result = results[name]
            labels = (name, str(policy.action))
            metrics.POLICY_VIOLATIONS.labels(*labels).set(result.total)
            series.add(labels)
            try:
                await self._write(policy, result, now)
            except ApiError as exc:
                ok = False
                log.warning(
                    "policy %s: writing the audit status failed: %s; retrying in %g s",
                    name,
                    exc,
                    min(self.config.interval, self.config.retry),
                    extra={"policy": name},
                )
        for labels in self._series - series:
            metrics.POLICY_VIOLATIONS.remove(*labels)
        self._series = series
        elapsed = time.perf_counter() - started
        metrics.POLICY_AUDIT_DURATION.observe(elapsed)
        metrics.POLICY_AUDIT_LAST.set(time.time())
        log.debug(
            "audited %d groups against %d policies in %.3f s",
            len(groups),
            len(policies),
            elapsed,
            extra={"groups": len(groups), "policies": len(policies), "seconds": round(elapsed, 4)},
        )
        return ok

    def _current_status(self, name: str) -> tuple[str, dict[str, Any]]:
        """The policy's resourceVersion in the cache and its status (ours, if the cache lags behind it)."""
        obj = self.policies.get(name) or {}
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        written = self._written.get(name)
        if written is not None:
            if written[0] == version:
                return version, written[1]
            del self._written[name]
        status = obj.get("status")
        return version, status if isinstance(status, dict) else {}

    async def _write(self, policy: AgentGroupPolicy, result: AuditResult, now: datetime) -> None:
        name = policy.metadata.name
        version, current = self._current_status(name)
        desired = result.status(rfc3339(now), policy.metadata.generation)
        if _result(current, self._kept) != _result(desired, self._kept):
            reason = "changed"
        else:
            written_at = parse_time(current.get("auditTimestamp"))
            if written_at is not None and now - written_at < self.config.refresh:
                return
            reason = "refresh"
        try:
            updated = await self.kube.patch(
                AGENT_GROUP_POLICIES, name, {"status": desired}, subresource="status"
            )
        except ApiError as exc:
            if exc.is_not_found:  # deleted since the cache saw it
                return
            raise
        status = updated.get("status")
        if isinstance(status, dict):
            self._kept = tuple(f for f in RESULT_FIELDS if f == "violations" or f in status)
        self._written[name] = (version, status if isinstance(status, dict) else desired)
        metrics.POLICY_STATUS_WRITES.labels(reason).inc()
        before = current.get("totalViolations")
        if before != result.total:
            log.info(
                "policy %s (%s): %d violations%s",
                name,
                policy.action,
                result.total,
                "" if before is None else f" (was {before})",
                extra={"policy": name, "action": str(policy.action), "violations": result.total},
            )
