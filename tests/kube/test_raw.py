"""Kube against a scripted HTTP server on loopback: paths, headers, bodies, errors and watch streams."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from kubernetes.aio.client import ApiClient, Configuration
from prometheus_client import REGISTRY

from shared.kube.raw import ApiError, Kube
from shared.kube.resources import (
    AGENT_GROUPS,
    CONFIG_MAPS,
    NAMESPACES,
    SANDBOXES_V1BETA1,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Server:
    url: str
    handler: Handler | None = None
    requests: list[Seen] = field(default_factory=list)

    @property
    def last(self) -> Seen:
        return self.requests[-1]


def reply(body: Any, status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return handle


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}


def stream(*chunks: bytes, abort: bool = False) -> Handler:
    """A watch response sending ``chunks``; ``abort`` drops the connection instead of ending cleanly."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(chunk)
        if abort:
            assert request.transport is not None
            request.transport.abort()
            return resp
        await resp.write_eof()
        return resp

    return handle


def line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(url="")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        query, headers = dict(request.query), dict(request.headers)
        state.requests.append(Seen(request.method, request.path, request.raw_path, query, headers, body))
        assert state.handler is not None, "the test did not script a response"
        return await state.handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def make_kube(url: str) -> Kube:
    config = Configuration(host=url)
    config.api_key["BearerToken"] = "sekret"
    config.api_key_prefix["BearerToken"] = "Bearer"
    return Kube(ApiClient(configuration=config), request_timeout=10)


@pytest.fixture
async def kube(server: Server) -> AsyncIterator[Kube]:
    async with make_kube(server.url) as k:
        yield k


def requests_total(verb: str, resource: str, code: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "agentgroup_kube_requests_total", {"verb": verb, "resource": resource, "code": code}
        )
        or 0.0
    )


# --- reads ----------------------------------------------------------------------------------------


async def test_get_returns_the_object_and_sends_auth_and_accept(server: Server, kube: Kube) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}
    server.handler = reply(obj)
    before = requests_total("get", "configmaps", "200")
    assert await kube.get(CONFIG_MAPS, "a", "ns") == obj
    assert server.last.method == "GET"
    assert server.last.path == "/api/v1/namespaces/ns/configmaps/a"
    assert server.last.headers["Authorization"] == "Bearer sekret"
    assert server.last.headers["Accept"] == "application/json"
    assert requests_total("get", "configmaps", "200") == before + 1


async def test_get_of_a_missing_object_is_none(server: Server, kube: Kube) -> None:
    server.handler = reply(status(404, "NotFound", 'agentgroups "a" not found'), 404)
    before = requests_total("get", "agentgroups", "404")
    assert await kube.get(AGENT_GROUPS, "a", "ns") is None
    assert server.last.path == "/apis/runtime.agentcube.volcano.sh/v1alpha1/namespaces/ns/agentgroups/a"
    assert requests_total("get", "agentgroups", "404") == before + 1


async def test_an_error_status_becomes_an_api_error(server: Server, kube: Kube) -> None:
    body = status(403, "Forbidden", 'agentgroups is forbidden: User "x" cannot get resource')
    server.handler = reply(body, 403)
    with pytest.raises(ApiError) as caught:
        await kube.get(AGENT_GROUPS, "a", "ns")
    err = caught.value
    assert (err.status, err.reason, err.message, err.body) == (403, "Forbidden", body["message"], body)
    assert [err.is_not_found, err.is_conflict, err.is_gone, err.is_already_exists, err.is_transient] == [
        False
    ] * 5


async def test_a_non_json_error_keeps_the_http_reason_and_text(server: Server, kube: Kube) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="upstream connect error")

    server.handler = handle
    with pytest.raises(ApiError) as caught:
        await kube.get(CONFIG_MAPS, "a", "ns")
    assert (caught.value.status, caught.value.reason) == (502, "Bad Gateway")
    assert caught.value.message == "upstream connect error"
    assert caught.value.is_transient


async def test_a_success_that_is_not_json_is_an_invalid_response(server: Server, kube: Kube) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>proxy login</html>")

    server.handler = handle
    with pytest.raises(ApiError, match="InvalidResponse"):
        await kube.get(CONFIG_MAPS, "a", "ns")


async def test_list_reads_every_page_and_fills_in_kind(server: Server, kube: Kube) -> None:
    pages = {
        "": {
            "metadata": {"resourceVersion": "10", "continue": "tok"},
            "items": [{"metadata": {"name": "a"}}],
        },
        "tok": {"metadata": {"resourceVersion": "10"}, "items": [{"metadata": {"name": "b"}}]},
    }

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(pages[request.query.get("continue", "")])

    server.handler = handle
    items, rv = await kube.list(CONFIG_MAPS, "ns", label_selector="app=x,tier in (a,b)")
    assert rv == "10"
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in items)
    first, second = server.requests
    assert first.path == second.path == "/api/v1/namespaces/ns/configmaps"
    assert first.query == {"limit": "500", "labelSelector": "app=x,tier in (a,b)"}
    assert second.query == {**first.query, "continue": "tok"}


async def test_list_across_namespaces_and_of_cluster_scoped_resources(server: Server, kube: Kube) -> None:
    server.handler = reply({"metadata": {"resourceVersion": "3"}, "items": []})
    assert await kube.list(SANDBOXES_V1BETA1) == ([], "3")
    assert server.last.path == "/apis/agents.x-k8s.io/v1beta1/sandboxes"
    await kube.list(NAMESPACES, "ignored")
    assert server.last.path == "/api/v1/namespaces"


async def test_list_and_watch_pass_a_field_selector(server: Server, kube: Kube) -> None:
    # RBAC checks a list or watch with a metadata.name field selector against resourceNames.
    server.handler = reply({"metadata": {"resourceVersion": "7"}, "items": []})
    assert await kube.list(VALIDATING_WEBHOOK_CONFIGURATIONS, field_selector="metadata.name=x") == ([], "7")
    assert server.last.path == "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    assert server.last.query == {"limit": "500", "fieldSelector": "metadata.name=x"}
    server.handler = stream()
    events = kube.watch(
        VALIDATING_WEBHOOK_CONFIGURATIONS,
        resource_version="7",
        allow_bookmarks=False,
        field_selector="metadata.name=x",
    )
    assert await collect(events) == []
    assert server.last.query == {
        "watch": "true",
        "timeoutSeconds": "300",
        "resourceVersion": "7",
        "fieldSelector": "metadata.name=x",
    }


async def test_discover_puts_the_preferred_version_first(server: Server, kube: Kube) -> None:
    server.handler = reply(
        {
            "kind": "APIGroup",
            "name": "agents.x-k8s.io",
            "versions": [
                {"groupVersion": "agents.x-k8s.io/v1alpha1", "version": "v1alpha1"},
                {"groupVersion": "agents.x-k8s.io/v1beta1", "version": "v1beta1"},
            ],
            "preferredVersion": {"groupVersion": "agents.x-k8s.io/v1beta1", "version": "v1beta1"},
        }
    )
    assert await kube.discover("agents.x-k8s.io") == ["v1beta1", "v1alpha1"]
    assert server.last.path == "/apis/agents.x-k8s.io"


async def test_discover_of_an_unknown_group_is_empty(server: Server, kube: Kube) -> None:
    server.handler = reply(status(404, "NotFound", "the server could not find the requested resource"), 404)
    assert await kube.discover("nope.example.com") == []


# --- writes ---------------------------------------------------------------------------------------


async def test_create_posts_to_the_body_namespace(server: Server, kube: Kube) -> None:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "ns"},
    }
    server.handler = reply({**body, "metadata": {**body["metadata"], "uid": "u1"}}, 201)
    created = await kube.create(CONFIG_MAPS, body)
    assert created["metadata"]["uid"] == "u1"
    assert (server.last.method, server.last.path, server.last.body) == (
        "POST",
        "/api/v1/namespaces/ns/configmaps",
        body,
    )
    assert server.last.headers["Content-Type"] == "application/json"


async def test_create_of_an_existing_object_is_already_exists(server: Server, kube: Kube) -> None:
    server.handler = reply(status(409, "AlreadyExists", 'configmaps "a" already exists'), 409)
    with pytest.raises(ApiError) as caught:
        await kube.create(CONFIG_MAPS, {"metadata": {"name": "a"}}, "ns")
    assert caught.value.is_already_exists
    assert not caught.value.is_conflict


async def test_a_namespaced_create_without_a_namespace_is_refused_locally(server: Server, kube: Kube) -> None:
    with pytest.raises(ValueError, match="needs a namespace"):
        await kube.create(CONFIG_MAPS, {"metadata": {"name": "a"}})
    assert server.requests == []


async def test_replace_puts_to_the_object_and_reports_a_conflict(server: Server, kube: Kube) -> None:
    server.handler = reply(status(409, "Conflict", "the object has been modified"), 409)
    body = {"metadata": {"name": "g", "namespace": "ns", "resourceVersion": "5"}, "spec": {}}
    with pytest.raises(ApiError) as caught:
        await kube.replace(AGENT_GROUPS, body)
    assert caught.value.is_conflict
    assert not caught.value.is_already_exists
    assert server.last.method == "PUT"
    assert server.last.path.endswith("/namespaces/ns/agentgroups/g")
    assert server.last.body["metadata"]["resourceVersion"] == "5"


async def test_replace_needs_a_name(kube: Kube) -> None:
    with pytest.raises(ValueError, match=r"no metadata\.name"):
        await kube.replace(NAMESPACES, {"metadata": {}})


@pytest.mark.parametrize(
    ("patch_type", "patch", "content_type"),
    [
        ("merge", {"status": {"phase": "Running"}}, "application/merge-patch+json"),
        ("json", [{"op": "add", "path": "/status/phase", "value": "Running"}], "application/json-patch+json"),
        ("strategic", {"status": {"phase": "Running"}}, "application/strategic-merge-patch+json"),
    ],
)
async def test_patch_sends_the_content_type_of_its_kind(
    server: Server, kube: Kube, patch_type: Any, patch: Any, content_type: str
) -> None:
    server.handler = reply({"metadata": {"name": "g"}})
    before = requests_total("patch", "agentgroups/status", "200")
    await kube.patch(AGENT_GROUPS, "g", patch, "ns", subresource="status", patch_type=patch_type)
    assert server.last.method == "PATCH"
    assert (
        server.last.path == "/apis/runtime.agentcube.volcano.sh/v1alpha1/namespaces/ns/agentgroups/g/status"
    )
    assert server.last.headers["Content-Type"] == content_type
    assert server.last.body == patch
    assert server.last.query == {}
    assert requests_total("patch", "agentgroups/status", "200") == before + 1


async def test_server_side_apply_sends_field_manager_and_force(server: Server, kube: Kube) -> None:
    server.handler = reply({"metadata": {"name": "g"}})
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "g"}, "data": {"a": "1"}}
    await kube.patch(CONFIG_MAPS, "g", body, "ns", patch_type="apply", field_manager="agentgroup", force=True)
    assert server.last.headers["Content-Type"] == "application/apply-patch+yaml"
    assert server.last.query == {"fieldManager": "agentgroup", "force": "true"}
    assert server.last.body == body


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_type": "json"}, "list of operations"),
        ({"patch_type": "apply"}, "field_manager"),
        ({"patch_type": "yaml"}, "patch_type must be one of"),
    ],
)
async def test_bad_patch_arguments_are_refused_locally(
    server: Server, kube: Kube, kwargs: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await kube.patch(CONFIG_MAPS, "g", {"data": {}}, "ns", **kwargs)
    assert server.requests == []


async def test_delete_sends_propagation_and_precondition(server: Server, kube: Kube) -> None:
    server.handler = reply(status(200, "", ""))
    assert await kube.delete(SANDBOXES_V1BETA1, "s", "ns", propagation="Foreground", precondition_uid="u1")
    assert server.last.method == "DELETE"
    assert server.last.path == "/apis/agents.x-k8s.io/v1beta1/namespaces/ns/sandboxes/s"
    assert server.last.body == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Foreground",
        "preconditions": {"uid": "u1"},
    }


async def test_delete_of_a_missing_object_is_false(server: Server, kube: Kube) -> None:
    server.handler = reply(status(404, "NotFound", 'sandboxes "s" not found'), 404)
    assert await kube.delete(SANDBOXES_V1BETA1, "s", "ns") is False


async def test_names_cannot_escape_their_path_segment(server: Server, kube: Kube) -> None:
    server.handler = reply(status(404, "NotFound", "nope"), 404)
    await kube.get(CONFIG_MAPS, "../../secrets/x?watch=1", "ns")
    assert server.last.raw_path == "/api/v1/namespaces/ns/configmaps/..%2F..%2Fsecrets%2Fx%3Fwatch=1"
    assert server.last.query == {}


# --- watch ----------------------------------------------------------------------------------------


async def collect(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e async for e in events]


async def consume(events: AsyncIterator[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    """Like :func:`collect`, but keeps what arrived before an exception."""
    async for event in events:
        into.append(event)


async def test_watch_streams_events_until_the_server_ends_it(server: Server, kube: Kube) -> None:
    added = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "11"}}}
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}
    deleted = {"type": "DELETED", "object": {"metadata": {"name": "a", "resourceVersion": "13"}}}
    # One event split over two writes, and a blank keep-alive line.
    raw = line(added) + line(bookmark)
    server.handler = stream(raw[:7], raw[7:], b"\n", line(deleted))
    events = await collect(kube.watch(CONFIG_MAPS, "ns", resource_version="10", label_selector="a=b"))
    assert events == [added, bookmark, deleted]
    assert server.last.path == "/api/v1/namespaces/ns/configmaps"
    assert server.last.query == {
        "watch": "true",
        "timeoutSeconds": "300",
        "resourceVersion": "10",
        "labelSelector": "a=b",
        "allowWatchBookmarks": "true",
    }


async def test_watch_carries_objects_larger_than_the_read_buffer(server: Server, kube: Kube) -> None:
    big = {"type": "ADDED", "object": {"metadata": {"name": "a"}, "data": {"blob": "x" * (3 * 1024 * 1024)}}}
    server.handler = stream(line(big))
    assert await collect(kube.watch(CONFIG_MAPS, "ns", timeout_seconds=5, allow_bookmarks=False)) == [big]
    assert "allowWatchBookmarks" not in server.last.query


async def test_a_watch_error_event_is_raised(server: Server, kube: Kube) -> None:
    first = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "11"}}}
    gone = {"type": "ERROR", "object": status(410, "Expired", "too old resource version: 1 (42)")}
    server.handler = stream(line(first), line(gone))
    seen: list[dict[str, Any]] = []
    with pytest.raises(ApiError) as caught:
        await consume(kube.watch(CONFIG_MAPS, "ns", resource_version="1"), seen)
    assert seen == [first]
    assert caught.value.is_gone
    assert caught.value.reason == "Expired"


async def test_a_watch_refused_with_410_is_gone(server: Server, kube: Kube) -> None:
    server.handler = reply(status(410, "Gone", "too old"), 410)
    with pytest.raises(ApiError) as caught:
        await collect(kube.watch(CONFIG_MAPS, "ns", resource_version="1"))
    assert caught.value.is_gone


async def test_a_dropped_watch_connection_is_a_connection_error(server: Server, kube: Kube) -> None:
    partial = line({"type": "ADDED", "object": {"metadata": {"name": "a"}}}) + b'{"type": "MOD'
    server.handler = stream(partial, abort=True)
    seen: list[dict[str, Any]] = []
    with pytest.raises(ApiError) as caught:
        await consume(kube.watch(CONFIG_MAPS, "ns"), seen)
    assert len(seen) == 1
    assert caught.value.status == 0
    assert caught.value.is_transient


async def test_a_watch_line_that_is_not_an_event_is_an_invalid_response(server: Server, kube: Kube) -> None:
    server.handler = stream(b'{"kind": "Status"}\n')
    with pytest.raises(ApiError, match="not a watch event"):
        await collect(kube.watch(CONFIG_MAPS, "ns"))


async def test_an_abandoned_watch_releases_its_connection(server: Server, kube: Kube) -> None:
    release = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(line({"type": "ADDED", "object": {"metadata": {"name": "a"}}}))
        await release.wait()
        return resp

    server.handler = endless
    events = kube.watch(CONFIG_MAPS, "ns")
    assert (await anext(events))["type"] == "ADDED"
    await events.aclose()  # type: ignore[attr-defined]
    server.handler = reply({"metadata": {"name": "b"}})
    assert await kube.get(CONFIG_MAPS, "b", "ns") == {"metadata": {"name": "b"}}
    release.set()


# --- no server ------------------------------------------------------------------------------------


async def test_an_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = requests_total("get", "configmaps", "0")
    async with make_kube(f"http://127.0.0.1:{port}") as kube:
        with pytest.raises(ApiError) as caught:
            await kube.get(CONFIG_MAPS, "a", "ns")
    assert caught.value.status == 0
    assert caught.value.reason == "ConnectionError"
    assert caught.value.message.startswith("GET /api/v1/namespaces/ns/configmaps/a: ")
    assert requests_total("get", "configmaps", "0") == before + 1


def test_api_error_from_a_status_without_code_uses_the_http_status() -> None:
    err = ApiError.from_status({"kind": "Status", "reason": "Conflict", "message": "m"}, 409)
    assert (err.status, err.reason, err.message) == (409, "Conflict", "m")
    assert err.is_conflict
    assert str(err) == "409 Conflict: m"
    assert str(ApiError(0, "ConnectionError", "refused")) == "ConnectionError: refused"
