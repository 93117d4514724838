"""The self-managed rotator: the thin async shell around :mod:`certs.rotation`.

Every webhook replica runs one. Each pass it reads the shared Secret and our
ValidatingWebhookConfiguration, asks :func:`certs.rotation.plan_rotation` what
to do, writes the Secret with optimistic concurrency (create, or replace with
the ``resourceVersion`` it read; on 409 it re-reads and adopts the winner's
content), publishes ``tls.crt``/``tls.key``/``ca.crt`` atomically into
``out_dir`` for the webhook's certificate reload, and makes every webhook's
``clientConfig.caBundle`` equal ``ca.crt``. Passes run on an interval, at the
next rotation boundary, and whenever the webhook configuration changes (a
watch), so an overwritten caBundle (a Helm upgrade) is restored at once.

In the ``cert-manager`` and ``secret`` modes the rotator does nothing: the
chart mounts that Secret and cert-manager's cainjector (or the user) owns the
caBundle. It also never modifies a Secret that lacks its ownership annotation,
nor injects into a configuration annotated for cert-manager's cainjector.

Kubernetes access is :mod:`shared.kube`'s, as in every process: :class:`KubeCertsAPI` only maps
:class:`~shared.kube.Kube` calls onto the rotator's few questions and turns a lost race into
:class:`Conflict`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from certs.check import service_dns_names
from certs.files import write_cert_files
from certs.rotation import (
    CA_CRT,
    MANAGED_BY,
    TLS_CRT,
    TLS_KEY,
    RotationPlan,
    RotationSettings,
    SecretContent,
    apply_plan,
    plan_rotation,
)
from shared.kube import ApiError, Kube
from shared.kube import client as kube_client
from shared.kube.resources import SECRETS, VALIDATING_WEBHOOK_CONFIGURATIONS

if TYPE_CHECKING:
    from kubernetes.aio.client import ApiClient

__all__ = [
    "CAINJECTOR_ANNOTATION",
    "CertsAPI",
    "Conflict",
    "KubeCertsAPI",
    "Mode",
    "Rotator",
    "RotatorSettings",
    "SecretObject",
    "SyncResult",
    "WebhookConfig",
    "run_rotator",
]

log = logging.getLogger("agentgroup.certs")

Mode = Literal["self-managed", "cert-manager", "secret"]
MODES: tuple[Mode, ...] = ("self-managed", "cert-manager", "secret")

#: cert-manager's cainjector owns the caBundle of a configuration carrying this annotation.
CAINJECTOR_ANNOTATION = "cert-manager.io/inject-ca-from"
_MAX_CONFLICTS = 5


@dataclass(frozen=True)
class RotatorSettings:
    """Everything the rotator needs; the chart's values map one to one onto these."""

    secret_name: str
    secret_namespace: str
    service_name: str
    service_namespace: str
    out_dir: Path
    #: None: inject nowhere (e.g. a test that registers the webhook itself).
    webhook_config_name: str | None
    mode: Mode = "self-managed"
    cluster_domain: str = "cluster.local"
    #: Added to the service's four DNS names (e.g. "localhost").
    extra_dns_names: tuple[str, ...] = ()
    #: IP SANs, for a webhook reached by URL on an address (local test clusters).
    ip_addresses: tuple[str, ...] = ()
    ca_validity: timedelta = timedelta(days=3650)
    serving_validity: timedelta = timedelta(days=365)
    renew_fraction: float = 1 / 3
    #: Time for every kube-apiserver to see a caBundle change.
    propagation: timedelta = timedelta(minutes=1)
    #: Old CAs stay trusted this long after the switch; must exceed the replicas' re-read lag.
    overlap: timedelta = timedelta(minutes=10)
    #: How often each replica re-reads the Secret and the webhook configuration.
    interval: timedelta = timedelta(seconds=30)
    #: None: in-cluster config, else $KUBECONFIG / ~/.kube/config.
    kubeconfig: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown certificate mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.interval <= timedelta(0):
            raise ValueError("interval must be positive")
        for ip in self.ip_addresses:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"{ip!r} is not an IP address") from None
        if self.mode == "self-managed":
            if self.overlap < 2 * self.interval:
                raise ValueError(
                    f"overlap ({self.overlap}) must be at least twice the interval ({self.interval}) so that "
                    "every replica has loaded the new serving certificate before the old CA is dropped"
                )
            self.rotation_settings()  # validates the rest

    @property
    def dns_names(self) -> tuple[str, ...]:
        names = service_dns_names(self.service_name, self.service_namespace, self.cluster_domain)
        return names + tuple(n for n in self.extra_dns_names if n not in names)

    def rotation_settings(self) -> RotationSettings:
        return RotationSettings(
            dns_names=self.dns_names,
            ip_addresses=self.ip_addresses,
            ca_validity=self.ca_validity,
            serving_validity=self.serving_validity,
            renew_fraction=self.renew_fraction,
            propagation=self.propagation,
            overlap=self.overlap,
            ca_common_name=f"{self.service_name}.{self.service_namespace} webhook CA",
        )


# --------------------------------------------------------------------------- Kubernetes access


class Conflict(ApiError):
    """A write lost a race: the object changed (or appeared) since we read it; re-read and retry.

    :class:`KubeCertsAPI` raises it for a 409 (Conflict or AlreadyExists) and for a JSON patch whose
    ``test`` failed (422).
    """

    @classmethod
    def of(cls, error: ApiError, message: str | None = None) -> Conflict:
        return cls(error.status, error.reason, message or error.message, error.body)

    @property
    def is_conflict(self) -> bool:
        return True


@dataclass(frozen=True)
class SecretObject:
    content: SecretContent
    resource_version: str
    #: The object as read, so a replace keeps fields we do not manage (labels, owners...).
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class WebhookConfig:
    annotations: dict[str, str]
    #: (webhook name, decoded caBundle) in order.
    webhooks: tuple[tuple[str, bytes], ...]


class CertsAPI(Protocol):
    """The few API calls the rotator makes (an in-memory fake implements it in tests)."""

    async def read_secret(self, namespace: str, name: str) -> SecretObject | None: ...

    async def create_secret(self, namespace: str, name: str, content: SecretContent) -> SecretObject:
        """Raises :class:`Conflict` if it exists."""
        ...

    async def replace_secret(self, current: SecretObject, content: SecretContent) -> SecretObject:
        """Raises :class:`Conflict` if it changed since ``current`` was read."""
        ...

    async def read_webhook_config(self, name: str) -> WebhookConfig | None: ...

    async def set_ca_bundles(self, name: str, current: WebhookConfig, bundle: bytes) -> None:
        """Set every webhook's caBundle; raises :class:`Conflict` if the webhooks changed since read."""
        ...

    def watch_webhook_config(self, name: str) -> AsyncIterator[None]:
        """Yield once per change of the configuration (ends when the server closes the watch)."""
        ...


def _b64d(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        log.warning("%s is not valid base64; treating it as empty", what)
        return b""


def _b64e(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _to_secret(obj: dict[str, Any]) -> SecretObject:
    meta = obj.get("metadata") or {}
    data = {k: _b64d(v, f"Secret data {k}") for k, v in (obj.get("data") or {}).items()}
    return SecretObject(
        content=SecretContent(data=data, annotations=dict(meta.get("annotations") or {})),
        resource_version=str(meta.get("resourceVersion", "")),
        raw=obj,
    )


def _to_config(obj: dict[str, Any]) -> WebhookConfig:
    webhooks = tuple(
        (
            str(w.get("name", "")),
            _b64d((w.get("clientConfig") or {}).get("caBundle") or "", f"caBundle of {w.get('name')}"),
        )
        for w in obj.get("webhooks") or []
    )
    return WebhookConfig(
        annotations=dict((obj.get("metadata") or {}).get("annotations") or {}), webhooks=webhooks
    )


async def _write_secret(request: Awaitable[dict[str, Any]]) -> SecretObject:
    """The Secret as written; a 409 (it changed, or appeared, since we read it) is a :class:`Conflict`."""
    try:
        return _to_secret(await request)
    except ApiError as e:
        if e.is_conflict or e.is_already_exists:
            raise Conflict.of(e) from e
        raise


class KubeCertsAPI:
    """:class:`CertsAPI` over :class:`shared.kube.Kube`."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def read_secret(self, namespace: str, name: str) -> SecretObject | None:
        obj = await self.kube.get(SECRETS, name, namespace)
        return None if obj is None else _to_secret(obj)

    async def create_secret(self, namespace: str, name: str, content: SecretContent) -> SecretObject:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/name": "agentgroup",
                    "app.kubernetes.io/component": "webhook-certificates",
                    "app.kubernetes.io/managed-by": MANAGED_BY,
                },
                "annotations": dict(content.annotations),
            },
            "data": {k: _b64e(v) for k, v in content.data.items()},
        }
        return await _write_secret(self.kube.create(SECRETS, body))

    async def replace_secret(self, current: SecretObject, content: SecretContent) -> SecretObject:
        body = copy.deepcopy(current.raw)
        meta = body.setdefault("metadata", {})
        meta["resourceVersion"] = current.resource_version  # a stale write fails with 409
        meta["annotations"] = dict(content.annotations)
        body["data"] = {k: _b64e(v) for k, v in content.data.items()}
        return await _write_secret(self.kube.replace(SECRETS, body))

    async def read_webhook_config(self, name: str) -> WebhookConfig | None:
        obj = await self.kube.get(VALIDATING_WEBHOOK_CONFIGURATIONS, name)
        return None if obj is None else _to_config(obj)

    async def set_ca_bundles(self, name: str, current: WebhookConfig, bundle: bytes) -> None:
        ops: list[dict[str, Any]] = []
        for i, (hook, _) in enumerate(current.webhooks):
            # The test op makes the patch fail instead of writing into a different webhook.
            ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook})
            ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": _b64e(bundle)})
        if not ops:
            return
        try:
            await self.kube.patch(VALIDATING_WEBHOOK_CONFIGURATIONS, name, ops, patch_type="json")
        except ApiError as e:
            # A failed "test" op: the server says no more than 422.
            if e.is_conflict or e.status == 422:
                raise Conflict.of(
                    e, f"webhook configuration {name} changed while patching ({e.message})"
                ) from e
            raise

    async def watch_webhook_config(self, name: str) -> AsyncIterator[None]:
        # By name only: the chart's RBAC allows list and watch of this one configuration, which it
        # checks against the metadata.name field selector.
        selector = f"metadata.name={name}"
        _, rv = await self.kube.list(VALIDATING_WEBHOOK_CONFIGURATIONS, field_selector=selector)
        async for _ in self.kube.watch(
            VALIDATING_WEBHOOK_CONFIGURATIONS,
            resource_version=rv,
            allow_bookmarks=False,
            field_selector=selector,
        ):
            yield None


# --------------------------------------------------------------------------- the rotator


@dataclass(frozen=True)
class SyncResult:
    """What one pass did."""

    plan: RotationPlan | None
    secret_written: bool = False
    files_written: bool = False
    injected: bool = False
    #: Why the rotator stood aside (a foreign Secret), if it did.
    skipped: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Rotator:
    """One replica's rotator. ``sync_once`` is a full pass; ``run`` loops it."""

    def __init__(
        self,
        api: CertsAPI,
        settings: RotatorSettings,
        *,
        clock: Callable[[], datetime] = _utcnow,
        retry_backoff: timedelta = timedelta(seconds=1),
    ) -> None:
        self.api = api
        self.settings = settings
        self.clock = clock
        self.retry_backoff = retry_backoff
        self._rotation = settings.rotation_settings()
        self._next_check: datetime | None = None
        self._warned: set[str] = set()

    def _warn_once(self, key: str, msg: str, *args: object, level: int = logging.ERROR) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.log(level, msg, *args)

    async def _webhook(self) -> WebhookConfig | None:
        name = self.settings.webhook_config_name
        if name is None:
            return None
        config = await self.api.read_webhook_config(name)
        if config is None:
            self._warn_once(
                "no-vwc",
                "ValidatingWebhookConfiguration %s not found; caBundle injection waits for it",
                name,
                level=logging.WARNING,
            )
            return None
        if CAINJECTOR_ANNOTATION in config.annotations:
            self._warn_once(
                "cainjector",
                "ValidatingWebhookConfiguration %s is annotated %s: leaving its caBundle to cert-manager; "
                "set the chart's certificate mode to cert-manager, or remove the annotation",
                name,
                CAINJECTOR_ANNOTATION,
            )
            return None
        return config

    async def sync_once(self) -> SyncResult:
        s = self.settings
        for _ in range(_MAX_CONFLICTS):
            obj = await self.api.read_secret(s.secret_namespace, s.secret_name)
            if obj is not None and not obj.content.managed:
                self._warn_once(
                    "foreign",
                    "Secret %s/%s exists but was not created by the certificate rotator; leaving it alone. "
                    "Use the chart's 'secret' certificate mode for a Secret you provide, or delete it",
                    s.secret_namespace,
                    s.secret_name,
                )
                return SyncResult(plan=None, skipped="the Secret is not managed by the rotator")
            config = await self._webhook()
            now = self.clock()
            current = obj.content if obj is not None else None
            bundles = [b for _, b in config.webhooks] if config is not None else None
            plan = plan_rotation(current, now, self._rotation, webhook_bundles=bundles)
            written = False
            if plan.changes:
                new = apply_plan(current, plan, now, self._rotation)
                try:
                    if obj is None:
                        obj = await self.api.create_secret(s.secret_namespace, s.secret_name, new)
                    else:
                        obj = await self.api.replace_secret(obj, new)
                except Conflict:
                    log.info("Secret %s/%s changed under us; re-reading", s.secret_namespace, s.secret_name)
                    continue
                written = True
                log.info(
                    "Secret %s/%s updated: %s", s.secret_namespace, s.secret_name, "; ".join(plan.reasons)
                )
            elif plan.reasons:
                log.debug("certificates: %s", "; ".join(plan.reasons))
            assert obj is not None
            break
        else:
            raise Conflict(
                409,
                "Conflict",
                f"Secret {s.secret_namespace}/{s.secret_name}: {_MAX_CONFLICTS} conflicts in a row",
            )

        self._next_check = plan.next_check
        data = obj.content.data
        files = {name: data[name] for name in (TLS_CRT, TLS_KEY, CA_CRT)}
        files_written = await asyncio.to_thread(write_cert_files, s.out_dir, files)
        if files_written:
            log.info("certificate files written to %s", s.out_dir)
        injected = False
        if (
            config is not None
            and s.webhook_config_name is not None
            and any(b != data[CA_CRT] for _, b in config.webhooks)
        ):
            try:
                await self.api.set_ca_bundles(s.webhook_config_name, config, data[CA_CRT])
                injected = True
                log.info("caBundle of %s set from Secret %s", s.webhook_config_name, s.secret_name)
            except Conflict as e:
                log.info("%s; retrying on the next pass", e)
                self._next_check = now
        return SyncResult(plan=plan, secret_written=written, files_written=files_written, injected=injected)

    @property
    def next_check(self) -> datetime | None:
        """When the last pass's plan next crosses a boundary (None: nothing scheduled)."""
        return self._next_check

    def _delay(self) -> float:
        delay = self.settings.interval.total_seconds()
        if self._next_check is not None:
            delay = min(delay, (self._next_check - self.clock()).total_seconds())
        return max(delay, 0.05)

    async def _watch(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        name = self.settings.webhook_config_name
        if name is None:
            return
        first_backoff = min(0.5, self.retry_backoff.total_seconds())
        backoff = first_backoff
        while not stop.is_set():
            try:
                async for _ in self.api.watch_webhook_config(name):
                    wake.set()
                    backoff = first_backoff
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the interval pass still keeps things true
                log.debug("watch on %s ended: %s", name, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, self.settings.interval.total_seconds())

    async def run(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        """Loop until ``stop`` is set; ``ready`` is set once the files are in place."""
        wake = asyncio.Event()
        watcher = asyncio.create_task(self._watch(wake, stop))
        first_backoff = self.retry_backoff.total_seconds()
        backoff = first_backoff
        try:
            while not stop.is_set():
                try:
                    await self.sync_once()
                    backoff = first_backoff
                    delay = self._delay()
                    if ready is not None:
                        ready.set()
                except asyncio.CancelledError:
                    raise
                except (ApiError, OSError) as e:  # OSError: writing the certificate files
                    log.warning(
                        "certificate rotation pass failed (%s)%s; retrying in %.1fs", e, _hint(e), backoff
                    )
                    delay = backoff
                    backoff = min(backoff * 2, self.settings.interval.total_seconds())
                except Exception:  # never let the rotator die: expiring certificates break the cluster
                    log.exception("certificate rotation pass failed; retrying in %.1fs", backoff)
                    delay = backoff
                    backoff = min(backoff * 2, self.settings.interval.total_seconds())
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
                try:
                    await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                wake.clear()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _hint(e: Exception) -> str:
    if isinstance(e, ApiError) and e.status == 403:
        return (
            ": the webhook's ServiceAccount needs get/create/update on secrets in its namespace and "
            "get/list/watch/patch on validatingwebhookconfigurations (the chart's RBAC grants them)"
        )
    return ""


async def run_rotator(
    settings: RotatorSettings,
    stop: asyncio.Event,
    *,
    api_client: ApiClient | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run the rotator until ``stop`` is set (returns at once outside self-managed mode).

    ``ready`` is set when ``settings.out_dir`` holds a usable certificate; in
    the other modes it is set at once (the files come from a mounted Secret).
    Without ``api_client`` it makes (and closes) its own from ``settings.kubeconfig``
    (:func:`shared.kube.api_client`; raises :class:`shared.kube.KubeConfigError`).
    """
    if settings.mode != "self-managed":
        log.info("certificate mode %s: the rotator stays out of the way", settings.mode)
        if ready is not None:
            ready.set()
        return
    own = api_client is None
    kube = Kube(api_client if api_client is not None else await kube_client.api_client(settings.kubeconfig))
    try:
        await Rotator(KubeCertsAPI(kube), settings).run(stop, ready=ready)
    finally:
        if own:
            await kube.close()
