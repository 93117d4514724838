"""Operational HTTP endpoints of both processes: ``/healthz``, ``/readyz`` and ``/metrics``.

Addresses follow controller-runtime's flags: ``":8080"`` listens on every interface, ``"127.0.0.1:0"``
on a free loopback port, and ``"0"`` turns that server off. Both servers answer all three paths (they
are split only so that probes and scrapes can use different ports, as Kubernetes manifests expect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

DISABLED = "0"


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server run inside a loop it does not own: signals are the process runner's job."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def parse_address(addr: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port``, ``:port`` (every interface) or ``[::1]:port``; ``None`` for 0."""
    if addr == DISABLED:
        return None
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad listen address {addr!r}: use HOST:PORT, :PORT, or 0 to disable")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)


def bind(addr: str) -> socket.socket:
    """A listening TCP socket for ``addr`` (a ``parse_address`` form other than ``"0"``)."""
    parsed = parse_address(addr)
    if parsed is None:
        raise ValueError("address 0 means disabled: there is nothing to bind")
    host, port = parsed
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {addr}: {exc.strerror}") from exc
    return sock


class Ops:
    """Readiness checks plus the ASGI app and servers that expose them with the metrics."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self.started = asyncio.Event()
        self.app: ASGIApp = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET", "HEAD"]),
                Route("/readyz", self._readyz, methods=["GET", "HEAD"]),
                Route("/metrics", self._metrics, methods=["GET", "HEAD"]),
            ]
        )

    def add_readiness_check(self, name: str, fn: Callable[[], bool]) -> None:
        """``fn`` runs on every ``/readyz`` request; it must be quick and must not block."""
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is already registered")
        self._checks[name] = fn

    def readiness(self) -> dict[str, bool]:
        """Each check's current result; a check that raises counts as failed."""
        results: dict[str, bool] = {}
        for name, fn in self._checks.items():
            try:
                results[name] = bool(fn())
            except Exception:
                log.exception("readiness check %s raised", name, extra={"check": name})
                results[name] = False
        return results

    async def _healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def _readyz(self, request: Request) -> Response:
        results = self.readiness()
        lines = [f"[+]{name} ok" if ok else f"[-]{name} failed" for name, ok in results.items()]
        ready = all(results.values())
        lines.append("readyz check passed" if ready else "readyz check failed")
        return PlainTextResponse("\n".join(lines) + "\n", status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def serve(self, metrics_addr: str, health_addr: str, stop: asyncio.Event) -> None:
        """Serve the endpoints on both addresses (one server if they are equal) until ``stop`` is set.

        Raises ``ValueError`` / ``OSError`` naming the address if one cannot be used; ``started`` is
        set and ``metrics_port`` / ``health_port`` filled in once listening.
        """
        wanted = [a for a in dict.fromkeys((metrics_addr, health_addr)) if a != DISABLED]
        for addr in wanted:
            parse_address(addr)
        sockets: dict[str, socket.socket] = {}
        try:
            for addr in wanted:
                sockets[addr] = bind(addr)
        except OSError:
            for sock in sockets.values():
                sock.close()
            raise
        ports = {addr: sock.getsockname()[1] for addr, sock in sockets.items()}
        self.metrics_port = ports.get(metrics_addr)
        self.health_port = ports.get(health_addr)
        servers = [
            EmbeddedServer(
                uvicorn.Config(
                    self.app, log_config=None, access_log=False, lifespan="off", server_header=False
                )
            )
            for _ in sockets
        ]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]), name=f"ops:{addr}")
            for server, (addr, sock) in zip(servers, sockets.items(), strict=True)
        ]
        try:
            for addr, port in ports.items():
                log.info("serving ops endpoints on %s (port %d)", addr, port, extra={"port": port})
            self.started.set()
            await stop.wait()
        finally:
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            for sock in sockets.values():
                sock.close()
