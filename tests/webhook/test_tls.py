"""The webhook over real TLS on loopback: certificate reload without a restart, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certs import pki
from certs.files import write_cert_files
from shared.rules import RuntimeKey
from tests.webhook.fakes import FakeCluster, example_runtimes, group, review, wait_until
from webhook.admission import RuntimeLookup
from webhook.app import VALIDATE_PATH, create_app
from webhook.server import WebhookServer
from webhook.tls import CertReloader

pytestmark = pytest.mark.anyio

VALID = group(("planner", "AgentRuntime", "planner-rt"), ("coder", "CodeInterpreter", "py-interp"))


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.new_ca("webhook test CA", valid_for=timedelta(days=1))


def serving_cert(ca: pki.KeyPair) -> pki.KeyPair:
    return pki.new_serving_cert(ca, ["localhost"], ip_addresses=["127.0.0.1"], valid_for=timedelta(days=1))


def publish(cert_dir: Path, pair: pki.KeyPair) -> None:
    write_cert_files(cert_dir, {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem})


def der(pair: pki.KeyPair) -> bytes:
    return pair.certificate.public_bytes(Encoding.DER)


@dataclass
class Webhook:
    reloader: CertReloader
    server: WebhookServer
    stop: asyncio.Event
    cluster: FakeCluster
    client_tls: ssl.SSLContext
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}{VALIDATE_PATH}"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=self.client_tls, **kwargs)

    async def served_certificate(self) -> bytes:
        """The certificate a new connection is given."""
        _, writer = await asyncio.open_connection("127.0.0.1", self.server.port, ssl=self.client_tls)
        try:
            return bytes(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        finally:
            writer.close()
            await writer.wait_closed()

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


@pytest.fixture
async def webhook(tmp_path: Path, ca: pki.KeyPair) -> AsyncIterator[Webhook]:
    cluster = FakeCluster(example_runtimes())
    reloader = CertReloader(tmp_path / "certs", interval=0.02)
    server = WebhookServer(create_app(cluster), reloader.context, "127.0.0.1:0", graceful_timeout=10)
    hook = Webhook(
        reloader, server, asyncio.Event(), cluster, ssl.create_default_context(cadata=ca.cert_pem.decode())
    )
    hook.tasks = [asyncio.create_task(reloader.run(hook.stop)), asyncio.create_task(server.serve(hook.stop))]
    await wait_until(lambda: server.listening, "the server to listen")
    yield hook
    await hook.close()


async def send(client: httpx.AsyncClient, url: str) -> httpx.Response:
    resp = await client.post(url, json=review(VALID))
    assert resp.status_code == 200, resp.text
    assert resp.json()["response"]["allowed"] is True, resp.text
    return resp


def peer_certificate(resp: httpx.Response) -> bytes:
    ssl_object = resp.extensions["network_stream"].get_extra_info("ssl_object")
    return bytes(ssl_object.getpeercert(binary_form=True))


async def wait_served(webhook: Webhook, expected: bytes, within: float = 5.0) -> None:
    """Wait until new connections are given the certificate ``expected`` (DER)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while await webhook.served_certificate() != expected:
        if loop.time() > deadline:
            raise AssertionError(f"new connections did not get the new certificate within {within:g} s")
        await asyncio.sleep(0.01)


async def test_a_new_certificate_is_served_without_a_failed_request(
    webhook: Webhook, ca: pki.KeyPair
) -> None:
    old, new = serving_cert(ca), serving_cert(ca)
    publish(webhook.reloader.cert_dir, old)
    await wait_until(lambda: webhook.reloader.loaded, "the first certificate")
    failures: list[BaseException] = []
    sent = {"kept": 0, "fresh": 0}
    last_kept: list[httpx.Response] = []
    done = asyncio.Event()

    async def keep_sending(name: str, client: httpx.AsyncClient) -> None:
        async with client:
            while not done.is_set():
                try:
                    resp = await send(client, webhook.url)
                except (AssertionError, httpx.HTTPError) as exc:
                    failures.append(exc)
                    continue
                sent[name] += 1
                last_kept[:] = [resp] if name == "kept" else last_kept

    one_connection = webhook.client()
    new_connections = webhook.client(limits=httpx.Limits(max_keepalive_connections=0))
    senders = [
        asyncio.create_task(keep_sending("kept", one_connection)),
        asyncio.create_task(keep_sending("fresh", new_connections)),
    ]
    await wait_until(lambda: min(sent.values()) >= 10, "requests before the swap")
    assert await webhook.served_certificate() == der(old)

    publish(webhook.reloader.cert_dir, new)
    await wait_served(webhook, der(new))
    before = dict(sent)
    await wait_until(lambda: all(sent[k] >= before[k] + 10 for k in sent), "requests after the swap")
    done.set()
    await asyncio.gather(*senders)

    assert failures == []
    assert peer_certificate(last_kept[0]) == der(old)  # the open connection kept working on its certificate


async def test_the_server_starts_without_a_certificate_and_serves_once_one_appears(
    webhook: Webhook, ca: pki.KeyPair
) -> None:
    assert not webhook.reloader.loaded
    async with webhook.client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(webhook.url, json=review(VALID))
        publish(webhook.reloader.cert_dir, serving_cert(ca))
        await wait_until(lambda: webhook.reloader.loaded, "the certificate to load")
        await send(client, webhook.url)


async def test_a_broken_certificate_is_refused_and_the_current_one_kept(
    webhook: Webhook, ca: pki.KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="webhook")
    good, other = serving_cert(ca), serving_cert(ca)
    publish(webhook.reloader.cert_dir, good)
    await wait_until(lambda: webhook.reloader.loaded, "the first certificate")
    write_cert_files(webhook.reloader.cert_dir, {"tls.crt": good.cert_pem, "tls.key": other.key_pem})
    await wait_until(lambda: "cannot load the serving certificate" in caplog.text, "the error to be logged")
    assert "(keeping the current one): tls.key: KeyMismatch: " in caplog.text
    assert await webhook.served_certificate() == der(good)
    async with webhook.client() as client:
        await send(client, webhook.url)


async def test_shutdown_answers_requests_in_flight_and_refuses_new_ones(
    webhook: Webhook, ca: pki.KeyPair
) -> None:
    publish(webhook.reloader.cert_dir, serving_cert(ca))
    await wait_until(lambda: webhook.reloader.loaded, "the certificate")
    arrived, release = asyncio.Event(), asyncio.Event()
    lookup = webhook.cluster.runtimes

    async def slow(namespace: str, refs: Collection[RuntimeKey]) -> RuntimeLookup:
        arrived.set()
        await release.wait()
        return await lookup(namespace, refs)

    webhook.cluster.runtimes = slow  # type: ignore[method-assign]
    async with webhook.client() as client:
        in_flight = asyncio.create_task(client.post(webhook.url, json=review(VALID)))
        await wait_until(arrived.is_set, "the request to be in flight")
        webhook.stop.set()
        await wait_until(lambda: not webhook.server.listening, "the server to stop accepting")
        async with webhook.client() as late:
            with pytest.raises(httpx.ConnectError):
                await late.post(webhook.url, json=review(VALID))
        release.set()
        resp = await in_flight
    assert resp.status_code == 200
    assert resp.json()["response"]["allowed"] is True
