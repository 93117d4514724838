"""An in-memory stand-in for the few API calls the rotator makes (certs.rotator.CertsAPI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from certs.rotation import SecretContent
from certs.rotator import Conflict, SecretObject, WebhookConfig
from shared.kube import ApiError


@dataclass
class FakeKube:
    secrets: dict[tuple[str, str], SecretObject] = field(default_factory=dict)
    configs: dict[str, WebhookConfig] = field(default_factory=dict)
    #: The first ``hold_reads`` Secret reads wait for each other, so that concurrent
    #: rotators all see the same state before any of them writes.
    hold_reads: int = 0
    #: Errors to raise from the next Secret reads, in order.
    read_errors: list[Exception] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    conflicts: int = 0
    patched: asyncio.Event = field(default_factory=asyncio.Event)
    _rv: int = 0
    _barrier: asyncio.Barrier | None = None
    _watchers: list[asyncio.Queue[None]] = field(default_factory=list)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def read_secret(self, namespace: str, name: str) -> SecretObject | None:
        if self.read_errors:
            raise self.read_errors.pop(0)
        if self.hold_reads > 0:
            if self._barrier is None:
                self._barrier = asyncio.Barrier(self.hold_reads)
            self.hold_reads -= 1
            await self._barrier.wait()
        return self.secrets.get((namespace, name))

    def put_secret(self, namespace: str, name: str, content: SecretContent) -> SecretObject:
        obj = SecretObject(
            content=content, resource_version=self._next_rv(), raw={"ns": namespace, "name": name}
        )
        self.secrets[(namespace, name)] = obj
        return obj

    async def create_secret(self, namespace: str, name: str, content: SecretContent) -> SecretObject:
        await asyncio.sleep(0)
        if (namespace, name) in self.secrets:
            self.conflicts += 1
            raise Conflict(409, "AlreadyExists", f'secrets "{name}" already exists')
        self.writes.append(f"create {namespace}/{name}")
        return self.put_secret(namespace, name, content)

    async def replace_secret(self, current: SecretObject, content: SecretContent) -> SecretObject:
        await asyncio.sleep(0)
        key = (current.raw["ns"], current.raw["name"])
        if key not in self.secrets:
            raise ApiError(404, "NotFound", f'secrets "{key[1]}" not found')
        if self.secrets[key].resource_version != current.resource_version:
            self.conflicts += 1
            raise Conflict(409, "Conflict", "the object has been modified")
        self.writes.append(f"replace {key[0]}/{key[1]}")
        return self.put_secret(*key, content)

    async def read_webhook_config(self, name: str) -> WebhookConfig | None:
        return self.configs.get(name)

    def set_config(self, name: str, config: WebhookConfig) -> None:
        """Change the configuration as another client would (e.g. a Helm upgrade), and notify watchers."""
        self.configs[name] = config
        for q in self._watchers:
            q.put_nowait(None)

    async def set_ca_bundles(self, name: str, current: WebhookConfig, bundle: bytes) -> None:
        config = self.configs.get(name)
        if config is None or [h for h, _ in config.webhooks] != [h for h, _ in current.webhooks]:
            raise Conflict(422, "Invalid", "webhooks changed")
        self.writes.append(f"patch {name}")
        self.set_config(
            name, WebhookConfig(config.annotations, tuple((h, bundle) for h, _ in config.webhooks))
        )
        self.patched.set()

    async def watch_webhook_config(self, name: str) -> AsyncIterator[None]:
        q: asyncio.Queue[None] = asyncio.Queue()
        self._watchers.append(q)
        try:
            while True:
                await q.get()
                yield None
        finally:
            self._watchers.remove(q)
