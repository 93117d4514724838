"""Shared fixtures: a fixed clock and one CA/serving pair (EC keys are cheap, but reuse keeps tests fast)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certs import pki
from certs.check import service_dns_names

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
NAMES = service_dns_names("agentgroup-webhook", "agentgroup-system")


@pytest.fixture(scope="session")
def ca() -> pki.KeyPair:
    return pki.new_ca("test CA", valid_for=timedelta(days=3650), now=NOW)


@pytest.fixture(scope="session")
def serving(ca: pki.KeyPair) -> pki.KeyPair:
    return pki.new_serving_cert(ca, NAMES, ip_addresses=["127.0.0.1"], valid_for=timedelta(days=365), now=NOW)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
