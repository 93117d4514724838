"""Fakes and builders for webhook tests: a Cluster of plain data, AdmissionReviews, example objects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from shared.kube.resources import Resource
from shared.models import RUNTIME_KINDS
from shared.policy import AgentGroupPolicy
from shared.rules import RuntimeKey
from webhook.admission import RuntimeLookup
from webhook.app import VALIDATE_PATH

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMESPACE = "team-a"
API_VERSION = "runtime.agentcube.volcano.sh/v1alpha1"


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def example_runtimes() -> set[RuntimeKey]:
    """(kind, name) of the runtimes in examples/good/01-runtimes.yaml."""
    docs = load_yaml(EXAMPLES / "good" / "01-runtimes.yaml")
    return {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in RUNTIME_KINDS}


def example_policy(**spec: Any) -> AgentGroupPolicy:
    """The policy of examples/bad/PolicyViolation.policy.yaml, with ``spec`` fields replaced."""
    [doc] = load_yaml(EXAMPLES / "bad" / "PolicyViolation.policy.yaml")
    return AgentGroupPolicy.model_validate({**doc, "spec": {**doc["spec"], **spec}})


def in_namespace(obj: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
    """``obj`` as the API server hands it to admission: with ``metadata.namespace`` set."""
    return {**obj, "metadata": {**obj.get("metadata", {}), "namespace": namespace}}


def group(
    *agents: tuple[str, str, str],
    deps: Sequence[tuple[str, str]] = (),
    name: str = "g",
    namespace: str = NAMESPACE,
    **spec: Any,
) -> dict[str, Any]:
    """An AgentGroup; each agent is (name, runtime kind, runtime name); ``spec`` adds spec fields."""
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentGroup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "agents": [{"name": n, "runtimeRef": {"kind": k, "name": r}} for n, k, r in agents],
            "dependencies": [{"from": a, "to": b} for a, b in deps],
            **spec,
        },
    }


def big_group(n: int) -> dict[str, Any]:
    """A valid chain of ``n`` agents on the example runtimes."""
    agents = [(f"agent-{i}", "AgentRuntime", "planner-rt") for i in range(n)]
    return group(*agents, deps=[(f"agent-{i}", f"agent-{i + 1}") for i in range(n - 1)])


def review(
    obj: Any,
    *,
    operation: str = "CREATE",
    old: Any = None,
    sub_resource: str | None = None,
    dry_run: bool = False,
    api_version: str = "admission.k8s.io/v1",
    uid: str | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as the kube-apiserver sends it for an AgentGroup."""
    meta = (obj or old or {}).get("metadata", {})
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": "runtime.agentcube.volcano.sh", "version": "v1alpha1", "kind": "AgentGroup"},
        "resource": {
            "group": "runtime.agentcube.volcano.sh",
            "version": "v1alpha1",
            "resource": "agentgroups",
        },
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", NAMESPACE),
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


async def call_asgi(app: Any, messages: list[dict[str, Any]]) -> tuple[int, bytes]:
    """Send ``messages`` to the app as the ASGI server would; the status and body it answers."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": VALIDATE_PATH,
        "raw_path": VALIDATE_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8443),
    }
    incoming = iter(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


class FakeCluster:
    """A :class:`webhook.admission.Cluster` of plain data that records the runtime lookups it gets."""

    def __init__(
        self,
        runtimes: Iterable[RuntimeKey] = (),
        *,
        policies: Sequence[AgentGroupPolicy] = (),
        labels: dict[str, Mapping[str, str]] | None = None,
        namespace: str = NAMESPACE,
    ) -> None:
        self.existing: dict[str, set[RuntimeKey]] = {namespace: set(runtimes)}
        self.installed_policies = policies
        self.labels = labels or {}
        self.failing: dict[RuntimeKey, str] = {}
        self.lookups: list[tuple[str, frozenset[RuntimeKey]]] = []

    async def runtimes(self, namespace: str, refs: Collection[RuntimeKey]) -> RuntimeLookup:
        self.lookups.append((namespace, frozenset(refs)))
        here = self.existing.get(namespace, set())
        failed = {r: self.failing[r] for r in refs if r in self.failing}
        return RuntimeLookup(frozenset(r for r in refs if r in here and r not in failed), failed)

    def policies(self) -> Sequence[AgentGroupPolicy]:
        return self.installed_policies

    async def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self.labels.get(namespace)


class FakeKube:
    """An in-memory API server for informers and direct GETs, with a watch that can lag behind.

    ``put``/``remove`` change what GET and LIST see; their watch events are delivered at once unless
    ``lag=True``, in which case they wait for :meth:`deliver` (a watch that has not caught up yet).
    """

    def __init__(self) -> None:
        self.store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.gets: list[tuple[str, str, str | None]] = []
        self.get_error: Exception | None = None
        self.get_gate: asyncio.Event | None = None  # when set, GETs wait for it
        self.list_errors: dict[str, Exception] = {}  # by plural
        self._rv = 0
        self._queues: dict[str, list[asyncio.Queue[dict[str, Any]]]] = {}
        self._lagging: list[tuple[str, dict[str, Any]]] = []

    def _event(self, plural: str, event: dict[str, Any], lag: bool) -> None:
        if lag:
            self._lagging.append((plural, event))
            return
        for queue in self._queues.get(plural, []):
            queue.put_nowait(event)

    def put(self, res: Resource, obj: dict[str, Any], *, lag: bool = False) -> None:
        self._rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self.store.setdefault(res.plural, {})
        kind = "MODIFIED" if key in bucket else "ADDED"
        bucket[key] = obj
        self._event(res.plural, {"type": kind, "object": obj}, lag)

    def remove(self, res: Resource, name: str, namespace: str = "", *, lag: bool = False) -> None:
        obj = self.store.get(res.plural, {}).pop((namespace, name))
        self._event(res.plural, {"type": "DELETED", "object": obj}, lag)

    def deliver(self) -> None:
        lagging, self._lagging = self._lagging, []
        for plural, event in lagging:
            self._event(plural, event, lag=False)

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        if res.plural in self.list_errors:
            raise self.list_errors[res.plural]
        return list(self.store.get(res.plural, {}).values()), str(self._rv)

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues.setdefault(res.plural, []).append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues[res.plural].remove(queue)

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.gets.append((res.kind, name, namespace))
        if self.get_gate is not None:
            await self.get_gate.wait()
        if self.get_error is not None:
            raise self.get_error
        return self.store.get(res.plural, {}).get((namespace or "", name))


def runtime(kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name, "namespace": namespace}}


async def wait_until(predicate: Callable[[], object], what: str, within: float = 5.0) -> None:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.005)
