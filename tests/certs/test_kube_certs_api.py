"""KubeCertsAPI over a real shared.kube.Kube, against a scripted HTTP server on loopback.

What the adapter adds to Kube: the requests the rotator's questions become, and which failures are a
lost race (:class:`certs.rotator.Conflict`) rather than an error.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from kubernetes.aio.client import ApiClient, Configuration

from certs.rotation import MANAGED_BY, SecretContent
from certs.rotator import Conflict, KubeCertsAPI, SecretObject, WebhookConfig
from shared.kube import ApiError, Kube

pytestmark = pytest.mark.anyio

SECRET_PATH = "/api/v1/namespaces/ns/secrets/certs"
VWC_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class Server:
    """Answers ``(method, path)`` with the handler scripted for it; records every request."""

    url: str = ""
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)


def reply(body: Any, code: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=code)

    return handle


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}


def events(*items: dict[str, Any]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for item in items:
            await resp.write(json.dumps(item).encode() + b"\n")
        await resp.write_eof()
        return resp

    return handle


def list_then_watch(resource_version: str, *items: dict[str, Any]) -> Handler:
    """A list at ``resource_version``, and a watch sending ``items``."""
    listing = reply({"metadata": {"resourceVersion": resource_version}, "items": []})
    watch = events(*items)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await (watch if request.query.get("watch") == "true" else listing)(request)

    return handle


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        state.requests.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                request.headers.get("Content-Type", ""),
                json.loads(raw) if raw else None,
            )
        )
        handler = state.routes.get((request.method, request.path))
        assert handler is not None, f"unscripted request {request.method} {request.path}"
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[KubeCertsAPI]:
    async with Kube(ApiClient(configuration=Configuration(host=server.url)), request_timeout=10) as kube:
        yield KubeCertsAPI(kube)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def secret_object(rv: str = "5", **data: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": "certs",
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": {"team": "x"},
            "annotations": {"a": "1"},
        },
        "data": {k.replace("_", "."): b64(v) for k, v in data.items()},
    }


def config_object(
    *hooks: tuple[str, str | None], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    webhooks = [
        {"name": name, "clientConfig": {"url": "https://x"} | ({"caBundle": ca} if ca is not None else {})}
        for name, ca in hooks
    ]
    return {"metadata": {"name": "vwc", "annotations": annotations or {}}, "webhooks": webhooks}


# --- the Secret -----------------------------------------------------------------------------------


async def test_read_secret_decodes_data_and_keeps_the_object(server: Server, api: KubeCertsAPI) -> None:
    obj = secret_object(tls_crt=b"cert", ca_crt=b"ca")
    server.routes[("GET", SECRET_PATH)] = reply(obj)
    got = await api.read_secret("ns", "certs")
    assert got == SecretObject(SecretContent({"tls.crt": b"cert", "ca.crt": b"ca"}, {"a": "1"}), "5", obj)


async def test_read_of_a_missing_secret_is_none(server: Server, api: KubeCertsAPI) -> None:
    server.routes[("GET", SECRET_PATH)] = reply(status(404, "NotFound", 'secrets "certs" not found'), 404)
    assert await api.read_secret("ns", "certs") is None


async def test_create_secret_posts_a_labelled_tls_secret(server: Server, api: KubeCertsAPI) -> None:
    server.routes[("POST", "/api/v1/namespaces/ns/secrets")] = reply(secret_object("1", tls_crt=b"c"), 201)
    created = await api.create_secret("ns", "certs", SecretContent({"tls.crt": b"c"}, {"owner": "me"}))
    assert created.resource_version == "1"
    sent = server.requests[-1].body
    assert sent["type"] == "kubernetes.io/tls"
    assert sent["metadata"]["annotations"] == {"owner": "me"}
    assert sent["metadata"]["labels"]["app.kubernetes.io/managed-by"] == MANAGED_BY
    assert sent["data"] == {"tls.crt": b64(b"c")}


async def test_a_secret_that_appeared_since_the_read_is_a_conflict(server: Server, api: KubeCertsAPI) -> None:
    server.routes[("POST", "/api/v1/namespaces/ns/secrets")] = reply(
        status(409, "AlreadyExists", 'secrets "certs" already exists'), 409
    )
    with pytest.raises(Conflict) as caught:
        await api.create_secret("ns", "certs", SecretContent({}, {}))
    assert (caught.value.status, caught.value.reason) == (409, "AlreadyExists")
    assert caught.value.is_conflict


async def test_replace_secret_puts_with_the_resource_version_read(server: Server, api: KubeCertsAPI) -> None:
    current = SecretObject(SecretContent({}, {}), "5", secret_object("5", tls_crt=b"old"))
    server.routes[("PUT", SECRET_PATH)] = reply(secret_object("6", tls_crt=b"new"))
    written = await api.replace_secret(current, SecretContent({"tls.crt": b"new"}, {"b": "2"}))
    assert written.resource_version == "6"
    sent = server.requests[-1].body
    assert sent["metadata"]["resourceVersion"] == "5"
    assert sent["metadata"]["labels"] == {"team": "x"}  # fields we do not manage are kept
    assert sent["metadata"]["annotations"] == {"b": "2"}
    assert sent["data"] == {"tls.crt": b64(b"new")}
    assert current.raw["data"] == {"tls.crt": b64(b"old")}  # the object as read is not modified


async def test_a_stale_replace_is_a_conflict_and_other_errors_are_not(
    server: Server, api: KubeCertsAPI
) -> None:
    current = SecretObject(SecretContent({}, {}), "5", secret_object("5"))
    server.routes[("PUT", SECRET_PATH)] = reply(status(409, "Conflict", "the object has been modified"), 409)
    with pytest.raises(Conflict):
        await api.replace_secret(current, SecretContent({}, {}))
    server.routes[("PUT", SECRET_PATH)] = reply(status(404, "NotFound", 'secrets "certs" not found'), 404)
    with pytest.raises(ApiError) as caught:
        await api.replace_secret(current, SecretContent({}, {}))
    assert not isinstance(caught.value, Conflict)
    assert caught.value.is_not_found


# --- the webhook configuration --------------------------------------------------------------------


async def test_read_webhook_config_decodes_bundles(server: Server, api: KubeCertsAPI) -> None:
    obj = config_object(("a", b64(b"ca")), ("b", None), annotations={"x": "y"})
    server.routes[("GET", f"{VWC_PATH}/vwc")] = reply(obj)
    assert await api.read_webhook_config("vwc") == WebhookConfig({"x": "y"}, (("a", b"ca"), ("b", b"")))
    server.routes[("GET", f"{VWC_PATH}/vwc")] = reply(status(404, "NotFound", "not found"), 404)
    assert await api.read_webhook_config("vwc") is None


async def test_set_ca_bundles_tests_each_name_before_writing_it(server: Server, api: KubeCertsAPI) -> None:
    server.routes[("PATCH", f"{VWC_PATH}/vwc")] = reply(config_object())
    await api.set_ca_bundles("vwc", WebhookConfig({}, (("a", b""), ("b", b"old"))), b"ca")
    seen = server.requests[-1]
    assert seen.content_type == "application/json-patch+json"
    assert seen.body == [
        {"op": "test", "path": "/webhooks/0/name", "value": "a"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": b64(b"ca")},
        {"op": "test", "path": "/webhooks/1/name", "value": "b"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64(b"ca")},
    ]


async def test_a_failed_test_op_is_a_conflict(server: Server, api: KubeCertsAPI) -> None:
    server.routes[("PATCH", f"{VWC_PATH}/vwc")] = reply(
        status(422, "Invalid", "the server rejected our request due to an error in our request"), 422
    )
    with pytest.raises(Conflict, match="webhook configuration vwc changed while patching") as caught:
        await api.set_ca_bundles("vwc", WebhookConfig({}, (("a", b""),)), b"ca")
    assert caught.value.status == 422
    assert caught.value.is_conflict


async def test_a_forbidden_patch_is_not_a_conflict(server: Server, api: KubeCertsAPI) -> None:
    server.routes[("PATCH", f"{VWC_PATH}/vwc")] = reply(status(403, "Forbidden", "no"), 403)
    with pytest.raises(ApiError) as caught:
        await api.set_ca_bundles("vwc", WebhookConfig({}, (("a", b""),)), b"ca")
    assert not isinstance(caught.value, Conflict)
    assert caught.value.status == 403


async def test_no_webhooks_means_no_patch(server: Server, api: KubeCertsAPI) -> None:
    await api.set_ca_bundles("vwc", WebhookConfig({}, ()), b"ca")
    assert server.requests == []


async def test_watch_lists_then_watches_by_name_and_yields_per_change(
    server: Server, api: KubeCertsAPI
) -> None:
    changes = [
        {"type": "MODIFIED", "object": config_object()},
        {"type": "DELETED", "object": config_object()},
    ]
    server.routes[("GET", VWC_PATH)] = list_then_watch("42", *changes)
    assert [x async for x in api.watch_webhook_config("vwc")] == [None, None]
    listed, watched = server.requests
    # The chart's RBAC allows list and watch of the configuration with this field selector only.
    assert listed.query == {"limit": "500", "fieldSelector": "metadata.name=vwc"}
    assert watched.query == {
        "watch": "true",
        "timeoutSeconds": "300",
        "resourceVersion": "42",
        "fieldSelector": "metadata.name=vwc",
    }


async def test_a_watch_error_event_is_raised(server: Server, api: KubeCertsAPI) -> None:
    gone = {"type": "ERROR", "object": status(410, "Expired", "too old resource version")}
    server.routes[("GET", VWC_PATH)] = list_then_watch("42", gone)
    with pytest.raises(ApiError) as caught:
        _ = [x async for x in api.watch_webhook_config("vwc")]
    assert caught.value.is_gone
