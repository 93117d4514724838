"""The informer against the real kube-apiserver: it syncs, follows changes made with kubectl, resumes
after its connection drops, and after 410 Gone relists and reports what changed while it was away.

Connections go through a loopback TCP proxy the test can cut and make refuse, so a broken connection
is a real one. A real API server only answers 410 once its watch cache has moved past the requested
version, which a short test cannot arrange; the 410 is therefore simulated once (``ExpiringKube``),
and everything after it (the relist, the diff, the new watch) runs against the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from agentgroup.devcluster import LocalControlPlane
from shared.kube.client import api_client
from shared.kube.informer import EventType, Informer
from shared.kube.raw import ApiError, Kube
from shared.kube.resources import CONFIG_MAPS
from tests.e2e.kube import kubectl

pytestmark = pytest.mark.anyio

Seen = list[tuple[EventType, str]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Proxy:
    """A TCP relay to the API server that the test can cut (``sever``) and make refuse connections."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.refusing = False
        self.refused = 0
        self.port = 0
        self._links: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.sever()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self._server.wait_closed()

    def sever(self) -> None:
        """Drop every relayed connection at once, as a network failure would."""
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        self._relays.add(relay)
        try:
            await self._relay(client_r, client_w)
        except asyncio.CancelledError:
            client_w.transport.abort()
        finally:
            self._relays.discard(relay)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()
            return
        self._links |= {client_w, server_w}
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._links.discard(writer)


class ExpiringKube(Kube):
    """The real client, except that the next watch after :meth:`expire` fails with 410 Gone."""

    lists = 0
    _expired = False

    def expire(self) -> None:
        self._expired = True

    async def list(self, *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return await super().list(*args, **kwargs)

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        if self._expired:
            self._expired = False
            raise ApiError(410, "Expired", "too old resource version (simulated)")
        async for event in super().watch(*args, **kwargs):
            yield event


@contextlib.asynccontextmanager
async def connected(cluster: LocalControlPlane) -> AsyncIterator[tuple[ExpiringKube, Proxy]]:
    """A client whose connections to the control plane run through a :class:`Proxy`."""
    server = urlsplit(cluster.server)
    assert server.hostname is not None
    assert server.port is not None
    async with Proxy(server.hostname, server.port) as proxy:
        api = await api_client(str(cluster.kubeconfig))
        api.configuration.host = f"https://{server.hostname}:{proxy.port}"
        async with ExpiringKube(api) as kube:
            yield kube, proxy


@contextlib.asynccontextmanager
async def informing(kube: Kube, namespace: str, seen: Seen, **kwargs: Any) -> AsyncIterator[Informer]:
    """A synced informer of the namespace's ConfigMaps recording (type, name) of each change."""

    def record(kind: EventType, obj: dict[str, Any]) -> None:
        seen.append((kind, obj["metadata"]["name"]))

    kwargs.setdefault("label_selector", OURS)
    informer = Informer(
        kube,
        CONFIG_MAPS,
        namespace=namespace,
        handler=record,
        name=f"e2e-{uuid.uuid4().hex[:8]}",
        backoff_base=0.05,
        backoff_cap=0.5,
        **kwargs,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    try:
        with anyio.fail_after(30):
            await informer.synced.wait()
        yield informer
    finally:
        stop.set()
        with anyio.fail_after(30):
            await task


async def until(predicate: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    """Wait for state owned by the informer's task, failing after ``deadline`` seconds."""
    try:
        with anyio.fail_after(deadline):
            while not predicate():  # noqa: ASYNC110 - the state has no event of its own to wait on
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {deadline:g} s waiting for {what}") from None


async def run_kubectl(*args: str, input: str | None = None) -> None:
    await asyncio.to_thread(kubectl, *args, input=input, check=True)


# Every namespace gets a kube-root-ca.crt ConfigMap at a moment of the controller manager's choosing:
# the informers only look at the test's own ConfigMaps.
OURS = "e2e.agentgroup.io/informer=yes"


async def create_configmap(namespace: str, name: str, **labels: str) -> None:
    key, _, value = OURS.partition("=")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {key: value, **labels}},
        "data": {"k": "v"},
    }
    await run_kubectl("create", "-f", "-", input=json.dumps(body))


def names(informer: Informer) -> set[str]:
    return {obj["metadata"]["name"] for obj in informer.items()}


async def test_syncs_and_follows_kubectl_changes(cluster: LocalControlPlane, namespace: str) -> None:
    await create_configmap(namespace, "before")
    seen: Seen = []
    async with connected(cluster) as (kube, _), informing(kube, namespace, seen) as informer:
        assert seen == [("ADDED", "before")]
        assert names(informer) == {"before"}
        before = informer.get("before")
        assert before is not None
        assert before["data"] == {"k": "v"}

        await create_configmap(namespace, "new")
        await run_kubectl("patch", "configmap", "before", "-n", namespace, "-p", '{"data":{"k":"w"}}')
        await run_kubectl("delete", "configmap", "new", "-n", namespace)
        await until(lambda: len(seen) == 4, "three changes")
        assert seen[1:] == [("ADDED", "new"), ("MODIFIED", "before"), ("DELETED", "new")]
        assert names(informer) == {"before"}
        after = informer.get("before")
        assert after is not None
        assert after["data"] == {"k": "w"}
        assert kube.lists == 1


async def test_a_label_selector_scopes_the_cache(cluster: LocalControlPlane, namespace: str) -> None:
    await create_configmap(namespace, "mine")
    await run_kubectl("label", "configmap", "mine", "-n", namespace, "team=a")
    await create_configmap(namespace, "theirs")
    seen: Seen = []
    async with (
        connected(cluster) as (kube, _),
        informing(kube, namespace, seen, label_selector=f"{OURS},team=a") as informer,
    ):
        assert names(informer) == {"mine"}
        await run_kubectl("label", "configmap", "theirs", "-n", namespace, "team=a")
        await run_kubectl("label", "configmap", "mine", "-n", namespace, "team-")
        # Leaving the selector is a DELETED for the informer, entering it an ADDED.
        await until(lambda: len(seen) == 3, "the relabelling")
        assert seen[1:] == [("ADDED", "theirs"), ("DELETED", "mine")]
        assert names(informer) == {"theirs"}


async def test_resumes_after_the_connection_drops(cluster: LocalControlPlane, namespace: str) -> None:
    await create_configmap(namespace, "stays")
    await create_configmap(namespace, "goes")
    seen: Seen = []
    async with connected(cluster) as (kube, proxy), informing(kube, namespace, seen) as informer:
        proxy.refusing = True
        proxy.sever()
        await until(lambda: proxy.refused >= 2, "the informer to retry while the server is unreachable")
        await create_configmap(namespace, "added")
        await run_kubectl("delete", "configmap", "goes", "-n", namespace)
        proxy.refusing = False

        await until(lambda: len(seen) == 4, "the changes made during the outage")
        assert seen[2:] == [("ADDED", "added"), ("DELETED", "goes")]
        assert names(informer) == {"stays", "added"}
        assert kube.lists == 1, "resuming from the last resourceVersion needs no relist"

        await create_configmap(namespace, "later")
        await until(lambda: informer.get("later") is not None, "a change after the reconnect")


async def test_gone_relists_and_reports_what_changed_in_the_gap(
    cluster: LocalControlPlane, namespace: str
) -> None:
    for name in ("keep", "change", "drop"):
        await create_configmap(namespace, name)
    seen: Seen = []
    async with connected(cluster) as (kube, proxy), informing(kube, namespace, seen) as informer:
        seen.clear()
        proxy.refusing = True
        proxy.sever()
        await until(lambda: proxy.refused >= 1, "the informer to lose the server")
        await run_kubectl("patch", "configmap", "change", "-n", namespace, "-p", '{"data":{"x":"1"}}')
        await run_kubectl("delete", "configmap", "drop", "-n", namespace)
        await create_configmap(namespace, "new")
        kube.expire()
        proxy.refusing = False

        await until(lambda: len(seen) == 3, "the relist's diff")
        assert sorted(seen) == [("ADDED", "new"), ("DELETED", "drop"), ("MODIFIED", "change")]
        assert names(informer) == {"keep", "change", "new"}
        changed = informer.get("change")
        assert changed is not None
        assert changed["data"]["x"] == "1"
        assert kube.lists == 2

        # It watches on from the relist's resourceVersion.
        await run_kubectl("delete", "configmap", "keep", "-n", namespace)
        await until(lambda: seen[-1] == ("DELETED", "keep"), "a change after the relist")
        assert kube.lists == 2
