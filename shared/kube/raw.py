"""Raw-JSON access to the Kubernetes API: dicts in, dicts out, no generated model objects.

Requests go through the ``kubernetes.aio`` ``ApiClient`` (so authentication, TLS and token refresh
are the client library's), but responses are read undecoded and parsed with orjson.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import aiohttp
import orjson
from kubernetes.aio.client import ApiClient
from prometheus_client import Counter

from shared.kube.resources import Resource

PatchType = Literal["merge", "json", "strategic", "apply"]


class Patcher(Protocol):
    """The patch call of :class:`Kube`, for the protocols of its users (tests pass fakes)."""

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        patch_type: PatchType = "merge",
    ) -> dict[str, Any]: ...


Propagation = Literal["Background", "Foreground", "Orphan"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}

LIST_PAGE_SIZE = 500
# etcd caps an object at 1.5 MiB; a watch line is one object plus the event envelope.
MAX_WATCH_LINE = 16 * 1024 * 1024
# Status "code" of a connection-level failure, where no HTTP status was received.
NO_RESPONSE = 0

REQUESTS = Counter(
    "agentgroup_kube_requests_total",
    "Requests made to the Kubernetes API, by verb, resource and HTTP status code (0: no response).",
    ["verb", "resource", "code"],
)


class ApiError(Exception):
    """A failed API request: the HTTP status, the Status ``reason`` and ``message``, and the body.

    ``status`` is 0 when the server could not be reached or the connection broke.
    """

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @classmethod
    def from_status(cls, status: dict[str, Any], http_status: int = NO_RESPONSE) -> ApiError:
        """The error described by a ``Status`` object (an error response or a watch ERROR event)."""
        code = status.get("code")
        return cls(
            code if isinstance(code, int) and code else http_status,
            str(status.get("reason") or "Unknown"),
            str(status.get("message") or ""),
            status,
        )

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_conflict(self) -> bool:
        """A write lost a race (stale ``resourceVersion`` or failed precondition)."""
        return self.status == 409 and self.reason != "AlreadyExists"

    @property
    def is_already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def is_gone(self) -> bool:
        """The requested ``resourceVersion`` is too old: relist."""
        return self.status == 410

    @property
    def is_transient(self) -> bool:
        """Worth retrying with backoff: no response, throttled, or a server-side failure."""
        return self.status in (NO_RESPONSE, 429) or self.status >= 500


def _connection_error(what: str, exc: BaseException) -> ApiError:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ApiError(NO_RESPONSE, "ConnectionError", f"{what}: {detail}")


def _parse(data: bytes, status: int) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(status, "InvalidResponse", f"response is not JSON: {data[:200]!r}") from exc


def _error(status: int, http_reason: str | None, data: bytes) -> ApiError:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return ApiError.from_status(body, status)
    text = data[:500].decode("utf-8", "replace").strip()
    return ApiError(status, http_reason or "Unknown", text, body if isinstance(body, dict) else None)


def _metadata(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _namespace(res: Resource, body: dict[str, Any], namespace: str | None) -> str | None:
    ns = namespace or _metadata(body).get("namespace")
    if res.namespaced and not ns:
        raise ValueError(f"{res}: a namespaced object needs a namespace (argument or metadata.namespace)")
    return ns if res.namespaced else None


def _name(res: Resource, body: dict[str, Any]) -> str:
    name = _metadata(body).get("name")
    if not name or not isinstance(name, str):
        raise ValueError(f"{res}: the object has no metadata.name")
    return name


class Kube:
    """Dict-in, dict-out Kubernetes API access over one ``ApiClient``.

    Every method raises :class:`ApiError` for a failed request (``get`` and ``delete`` turn a 404 into
    ``None`` / ``False``); a connection failure is an ``ApiError`` with status 0.
    """

    def __init__(self, api: ApiClient, *, request_timeout: float = 30.0) -> None:
        self.api = api
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._connect_timeout = request_timeout

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.api.close()  # type: ignore[no-untyped-call]

    # --- transport --------------------------------------------------------------------------------

    async def _send(
        self,
        verb: str,
        label: str,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request; return the open response of a 2xx, raise :class:`ApiError` otherwise."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = await self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            rest = await self.api.call_api(
                method,
                url,
                header_params=headers,
                body=body,
                _request_timeout=client_timeout or self._timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            REQUESTS.labels(verb, label, str(NO_RESPONSE)).inc()
            raise _connection_error(f"{method} {path}", exc) from exc
        resp: aiohttp.ClientResponse = rest.response
        REQUESTS.labels(verb, label, str(resp.status)).inc()
        if resp.status >= 400:
            try:
                data = await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                data = b""
            finally:
                resp.release()
            raise _error(resp.status, resp.reason, data)
        return resp

    async def _json(
        self,
        verb: str,
        label: str,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        resp = await self._send(verb, label, method, path, query=query, body=body, content_type=content_type)
        try:
            data = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _connection_error(f"{method} {path}", exc) from exc
        finally:
            resp.release()
        return _parse(data, resp.status)

    # --- verbs ------------------------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        try:
            obj: dict[str, Any] = await self._json("get", res.plural, "GET", res.path(namespace, name))
        except ApiError as exc:
            if exc.is_not_found:
                return None
            raise
        return obj

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        *,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """All matching objects (read in pages) and the list's ``resourceVersion`` to watch from.

        Items get ``apiVersion`` and ``kind`` filled in (the API omits them for built-in types).
        ``field_selector`` e.g. ``metadata.name=x``: RBAC checks that one against ``resourceNames``.
        """
        items: list[dict[str, Any]] = []
        base: list[tuple[str, str]] = [("limit", str(LIST_PAGE_SIZE))]
        if label_selector:
            base.append(("labelSelector", label_selector))
        if field_selector:
            base.append(("fieldSelector", field_selector))
        query = base
        path = res.path(namespace)
        while True:
            page = await self._json("list", res.plural, "GET", path, query=query)
            for item in page.get("items") or ():
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion", ""))
            query = [*base, ("continue", token)]

    async def create(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create ``body`` (in ``namespace`` or its ``metadata.namespace``); 409 AlreadyExists if present."""
        path = res.path(_namespace(res, body, namespace))
        obj: dict[str, Any] = await self._json("create", res.plural, "POST", path, body=body)
        return obj

    async def replace(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """PUT ``body``; its ``metadata.resourceVersion`` makes a stale write fail with 409 Conflict."""
        path = res.path(_namespace(res, body, namespace), _name(res, body))
        obj: dict[str, Any] = await self._json("update", res.plural, "PUT", path, body=body)
        return obj

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: dict[str, Any] | builtins.list[dict[str, Any]],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        patch_type: PatchType = "merge",
        field_manager: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """PATCH one object (or its ``subresource``, e.g. ``"status"``).

        ``patch_type="json"`` takes a list of RFC 6902 operations; ``"apply"`` (server-side apply)
        needs ``field_manager`` and takes ``force`` to take over conflicting fields.
        ``"strategic"`` only works for built-in types, not custom resources.
        """
        if patch_type not in PATCH_CONTENT_TYPES:
            raise ValueError(f"patch_type must be one of {sorted(PATCH_CONTENT_TYPES)}, not {patch_type!r}")
        if patch_type == "json" and not isinstance(patch, list):
            raise ValueError("a JSON patch is a list of operations")
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        query: list[tuple[str, str]] = []
        if field_manager:
            query.append(("fieldManager", field_manager))
        if force:
            query.append(("force", "true"))
        label = f"{res.plural}/{subresource}" if subresource else res.plural
        obj: dict[str, Any] = await self._json(
            "patch",
            label,
            "PATCH",
            res.path(namespace, name, subresource),
            query=query or None,
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
        )
        return obj

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: Propagation = "Background",
        precondition_uid: str | None = None,
    ) -> bool:
        """Delete one object; ``False`` when it was already gone.

        ``precondition_uid`` deletes only that incarnation (409 Conflict if the name now has another).
        """
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        if precondition_uid:
            options["preconditions"] = {"uid": precondition_uid}
        try:
            await self._json("delete", res.plural, "DELETE", res.path(namespace, name), body=options)
        except ApiError as exc:
            if exc.is_not_found:
                return False
            raise
        return True

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int = 300,
        *,
        field_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream ``{"type", "object"}`` watch events until the server ends the watch.

        ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK. An ERROR event (e.g. 410 Gone for a
        too-old ``resource_version``) is raised as :class:`ApiError`, as is a broken connection.
        """
        query: list[tuple[str, str]] = [("watch", "true"), ("timeoutSeconds", str(timeout_seconds))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        # The server closes the watch after timeout_seconds; a quiet watch may send nothing until then.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._connect_timeout, sock_read=timeout_seconds + 30
        )
        path = res.path(namespace)
        resp = await self._send("watch", res.plural, "GET", path, query=query, client_timeout=timeout)
        try:
            while True:
                try:
                    line = await resp.content.readline(max_line_length=MAX_WATCH_LINE)
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                    raise _connection_error(f"watch {path}", exc) from exc
                if not line:
                    return
                if line.isspace():
                    continue
                event = _parse(line, resp.status)
                if not isinstance(event, dict) or "type" not in event:
                    raise ApiError(resp.status, "InvalidResponse", f"not a watch event: {line[:200]!r}")
                if event["type"] == "ERROR":
                    raise ApiError.from_status(event.get("object") or {})
                yield event
        finally:
            # An abandoned watch leaves unread data on the connection: never reuse it.
            resp.close()

    async def discover(self, group: str) -> builtins.list[str]:
        """The versions the server serves for an API group, preferred first; ``[]`` if none."""
        path = f"/apis/{group}" if group else "/api"
        try:
            doc = await self._json("discover", group or "core", "GET", path)
        except ApiError as exc:
            if exc.is_not_found:
                return []
            raise
        if not group:
            return [str(v) for v in doc.get("versions") or ()]
        versions = [str(v.get("version")) for v in doc.get("versions") or () if v.get("version")]
        preferred = (doc.get("preferredVersion") or {}).get("version")
        if preferred in versions:
            versions.remove(preferred)
            versions.insert(0, preferred)
        return versions
