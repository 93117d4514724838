"""Webhook fixtures: the app in-process over httpx, on a FakeCluster holding the example runtimes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.webhook.fakes import FakeCluster, example_policy, example_runtimes
from webhook.app import create_app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster(example_runtimes(), policies=[example_policy()])


@pytest.fixture
async def client(cluster: FakeCluster) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(cluster, max_body_bytes=64 * 1024))
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as c:
        yield c
