"""The webhook's HTTPS server: uvicorn with httptools on the runner's uvloop, one worker, TLS only.

Scale is by replicas, not workers. On ``stop`` the listener closes, idle connections are closed, and
requests in flight are answered before :meth:`WebhookServer.serve` returns.
"""

from __future__ import annotations

import asyncio
import ssl

import uvicorn
from starlette.types import ASGIApp

from agentgroup.ops import EmbeddedServer, bind

# Inside Kubernetes' default 30 s terminationGracePeriodSeconds.
GRACEFUL_TIMEOUT = 25
# Longer than the 90 s idle timeout of the API server's (Go) client, so that the client, which knows
# when it will reuse a connection, is the side that closes idle ones.
KEEP_ALIVE_TIMEOUT = 120


class WebhookServer:
    """Serves ``app`` over TLS (``context``) on ``address`` (``HOST:PORT``, ``:PORT``; port 0: any)."""

    def __init__(
        self,
        app: ASGIApp,
        context: ssl.SSLContext,
        address: str,
        *,
        graceful_timeout: int = GRACEFUL_TIMEOUT,
    ) -> None:
        self._sock = bind(address)  # now, so a bad or busy address fails before anything starts
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            http="httptools",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            ssl_context_factory=lambda _config, _default: context,
            timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
            timeout_graceful_shutdown=graceful_timeout,
        )
        self._server = EmbeddedServer(config)

    @property
    def listening(self) -> bool:
        """True from the start of serving until the listener closes on ``stop``."""
        return self._server.started and all(s.is_serving() for s in self._server.servers)

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain."""
        task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="webhook-server")
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            self._server.should_exit = True
            await task
            self._sock.close()
