"""The webhook's view of the cluster, from list+watch caches: what :func:`webhook.admission.decide` reads.

Runtimes come from :class:`webhook.runtimes.RuntimeIndex`; AgentGroupPolicies (cluster-scoped) are
kept parsed, so a request never parses a policy; namespace labels select which policies apply. A
namespace the cache does not hold yet (created a moment ago) is read with one direct GET: a cold cache
must not let a group skip the policies that select its namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from shared.kube.informer import EventType, Informer
from shared.kube.raw import ApiError
from shared.kube.resources import AGENT_GROUP_POLICIES, NAMESPACES
from shared.policy import AgentGroupPolicy
from shared.rules import RuntimeKey
from webhook.admission import RuntimeLookup
from webhook.runtimes import GET_TIMEOUT, RuntimeIndex, RuntimeSource

log = logging.getLogger(__name__)


class KubeCluster:
    """A :class:`webhook.admission.Cluster` backed by informers; ready once every cache has synced."""

    def __init__(self, kube: RuntimeSource, *, get_timeout: float = GET_TIMEOUT) -> None:
        self._kube = kube
        self._get_timeout = get_timeout
        self.runtime_index = RuntimeIndex(kube, get_timeout=get_timeout)
        self._policy_informer = Informer(kube, AGENT_GROUP_POLICIES, handler=self._policy_changed)
        self._namespaces = Informer(kube, NAMESPACES)
        self._policies: tuple[AgentGroupPolicy, ...] = ()
        self.informers = [*self.runtime_index.informers.values(), self._policy_informer, self._namespaces]

    @property
    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers)

    async def run(self, stop: asyncio.Event) -> None:
        """Fill and follow every cache until ``stop`` is set."""
        await asyncio.gather(*(inf.run(stop) for inf in self.informers))

    async def runtimes(self, namespace: str, refs: Collection[RuntimeKey]) -> RuntimeLookup:
        return await self.runtime_index.lookup(namespace, refs)

    def policies(self) -> Sequence[AgentGroupPolicy]:
        return self._policies

    async def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        obj = self._namespaces.get(namespace)
        if obj is None:
            try:
                async with asyncio.timeout(self._get_timeout):
                    obj = await self._kube.get(NAMESPACES, namespace)
            except (ApiError, TimeoutError) as exc:
                reason = str(exc) or f"no answer from the API server within {self._get_timeout:g} s"
                log.warning("cannot read namespace %s: %s", namespace, reason, extra={"namespace": namespace})
                raise LookupError(reason) from exc
            if obj is None:
                return None
        labels = (obj.get("metadata") or {}).get("labels")
        return labels if isinstance(labels, dict) else {}

    def _policy_changed(self, _event: EventType, _obj: dict[str, Any]) -> None:
        policies = []
        for obj in self._policy_informer.items():
            try:
                policies.append(AgentGroupPolicy.model_validate(obj))
            except ValidationError as exc:  # the CRD schema should have refused it
                name = (obj.get("metadata") or {}).get("name")
                log.error("ignoring AgentGroupPolicy %s: it does not parse: %s", name, exc)
        self._policies = tuple(sorted(policies, key=lambda p: p.metadata.name))
