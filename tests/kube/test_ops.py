"""The ops endpoints: liveness, readiness with named checks, Prometheus metrics, and serving them."""

from __future__ import annotations

import asyncio
import logging
import socket

import anyio
import httpx
import pytest

import shared.kube.raw  # noqa: F401 - registers agentgroup_kube_requests_total
from agentgroup.ops import Ops, parse_address

pytestmark = pytest.mark.anyio


async def get(ops: Ops, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=ops.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        return await client.get(path)


async def test_healthz_is_ok_while_alive() -> None:
    ops = Ops()
    ops.add_readiness_check("never", lambda: False)
    resp = await get(ops, "/healthz")
    assert (resp.status_code, resp.text) == (200, "ok")


async def test_readyz_passes_when_every_check_passes() -> None:
    ops = Ops()
    ops.add_readiness_check("cache-synced", lambda: True)
    resp = await get(ops, "/readyz")
    assert resp.status_code == 200
    assert resp.text == "[+]cache-synced ok\nreadyz check passed\n"


async def test_readyz_names_the_failing_checks() -> None:
    ops = Ops()
    synced = False
    ops.add_readiness_check("cert-loaded", lambda: True)
    ops.add_readiness_check("cache-synced", lambda: synced)
    resp = await get(ops, "/readyz")
    assert resp.status_code == 503
    assert resp.text == "[+]cert-loaded ok\n[-]cache-synced failed\nreadyz check failed\n"
    synced = True
    assert (await get(ops, "/readyz")).status_code == 200


async def test_a_check_that_raises_fails_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> bool:
        raise RuntimeError("check bug")

    ops = Ops()
    ops.add_readiness_check("broken", broken)
    with caplog.at_level(logging.ERROR, logger="agentgroup.ops"):
        resp = await get(ops, "/readyz")
    assert resp.status_code == 503
    assert "[-]broken failed" in resp.text
    assert any(r.message == "readiness check broken raised" for r in caplog.records)


def test_a_check_name_is_registered_once() -> None:
    ops = Ops()
    ops.add_readiness_check("x", lambda: True)
    with pytest.raises(ValueError, match="already registered"):
        ops.add_readiness_check("x", lambda: True)


async def test_metrics_exposes_the_default_registry() -> None:
    resp = await get(Ops(), "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "# TYPE agentgroup_kube_requests_total counter" in resp.text


async def test_unknown_paths_are_404() -> None:
    assert (await get(Ops(), "/debug")).status_code == 404


@pytest.mark.parametrize(
    ("addr", "parsed"),
    [
        (":8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9443", ("::1", 9443)),
        ("localhost:8081", ("localhost", 8081)),
        ("0", None),
    ],
)
def test_parse_address(addr: str, parsed: tuple[str, int] | None) -> None:
    assert parse_address(addr) == parsed


@pytest.mark.parametrize("addr", ["8080", "", "host:", "host:http", ":70000"])
def test_a_bad_address_is_a_clear_error(addr: str) -> None:
    with pytest.raises(ValueError, match="use HOST:PORT, :PORT, or 0 to disable"):
        parse_address(addr)


async def serving(ops: Ops, metrics: str, health: str) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(ops.serve(metrics, health, stop))
    with anyio.fail_after(10):
        await ops.started.wait()
    return stop, task


async def test_serve_listens_on_both_addresses_and_stops() -> None:
    ops = Ops()
    ops.add_readiness_check("ready", lambda: True)
    stop, task = await serving(ops, "127.0.0.1:0", "127.0.0.1:0")
    # Two "127.0.0.1:0" are one address: one server answers both.
    assert ops.metrics_port == ops.health_port
    assert ops.metrics_port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.health_port}") as client:
        assert (await client.get("/readyz")).status_code == 200
        assert "agentgroup_kube_requests_total" in (await client.get("/metrics")).text
    stop.set()
    with anyio.fail_after(10):
        await task


async def test_serve_runs_one_server_per_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ops = Ops()
    stop, task = await serving(ops, "127.0.0.1:0", f"127.0.0.1:{port}")
    assert ops.health_port == port
    assert ops.metrics_port not in (None, port)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{ops.metrics_port}/healthz")).status_code == 200
        assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    stop.set()
    with anyio.fail_after(10):
        await task


async def test_zero_disables_a_server() -> None:
    ops = Ops()
    stop, task = await serving(ops, "0", "127.0.0.1:0")
    assert ops.metrics_port is None
    assert ops.health_port
    stop.set()
    with anyio.fail_after(10):
        await task


async def test_a_busy_address_fails_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError, match=f"cannot listen on {addr}"):
            await Ops().serve("127.0.0.1:0", addr, asyncio.Event())
