"""TLS serving with a certificate that is reloaded from files without a restart.

The server listens with one SSLContext that never changes and holds no certificate; its SNI callback,
which OpenSSL runs for every ClientHello (with or without a server name), points each new
connection at the context of the newest certificate. Open connections keep the context they
started with. The files are polled rather than watched with inotify, which goes silent when the
kubelet swaps a mounted Secret's ``..data`` symlink.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import UTC, datetime
from pathlib import Path

from certs.check import check_pair, describe, parse_certificates
from certs.files import data_dir, read_cert_files
from webhook import metrics

log = logging.getLogger(__name__)

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
POLL_INTERVAL = 1.0


def _server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class CertReloader:
    """Serves the newest ``tls.crt`` / ``tls.key`` of ``cert_dir``; give :attr:`context` to the server.

    Until a certificate has loaded, handshakes fail and :attr:`loaded` is False (not ready).
    """

    def __init__(self, cert_dir: Path, *, interval: float = POLL_INTERVAL) -> None:
        self.cert_dir = cert_dir
        self.interval = interval
        self.context = _server_context()
        self.context.sni_callback = self._select
        self._current: ssl.SSLContext | None = None
        self._pems: dict[str, bytes] | None = None  # what is loaded, or last failed to load
        self._missing_logged = False

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def _select(self, conn: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if self._current is None:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        conn.context = self._current
        return None

    def reload(self) -> bool:
        """Load the files if they changed since the last attempt; True when a new certificate is in use.

        Blocking file I/O: call it from a thread (``run`` does).
        """
        try:
            pems = read_cert_files(self.cert_dir, (CERT_FILE, KEY_FILE))
        except (FileNotFoundError, NotADirectoryError) as exc:
            if not self._missing_logged:
                log.warning("no serving certificate yet (%s): not ready until it appears", exc)
                self._missing_logged = True
            return False
        if pems == self._pems:
            return False
        self._pems = pems
        # Load from the generation just read: its files never change (certs.files writes a new one).
        folder = data_dir(self.cert_dir)
        problems = [str(p) for p in check_pair(pems[CERT_FILE], pems[KEY_FILE], now=datetime.now(UTC))]
        ctx = _server_context()
        try:
            ctx.load_cert_chain(folder / CERT_FILE, folder / KEY_FILE)
        except (OSError, ssl.SSLError) as exc:
            metrics.CERT_RELOADS.labels("failed").inc()
            log.error(
                "cannot load the serving certificate from %s (%s): %s",
                self.cert_dir,
                "keeping the current one" if self.loaded else "not ready",
                "; ".join(problems or [str(exc)]),
            )
            return False
        self._current = ctx
        self._missing_logged = False
        metrics.CERT_RELOADS.labels("loaded").inc()
        info = describe(parse_certificates(pems[CERT_FILE], CERT_FILE)[0][0])
        metrics.CERT_NOT_AFTER.set(info.not_after.timestamp())
        log.info(
            "serving certificate loaded from %s: %s, valid until %s, sha256 %s",
            self.cert_dir,
            info.subject,
            info.not_after.isoformat(),
            info.sha256,
        )
        for problem in problems:
            log.warning("the serving certificate in %s has a problem: %s", self.cert_dir, problem)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the files every :attr:`interval` seconds until ``stop`` is set."""
        while not stop.is_set():
            await asyncio.to_thread(self.reload)
            try:
                async with asyncio.timeout(self.interval):
                    await stop.wait()
            except TimeoutError:
                pass
