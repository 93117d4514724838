"""Running a long-lived process: uvloop, and SIGTERM/SIGINT turned into a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform; asyncio's loop works too
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _supervise(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("received %s again: exiting without draining", sig.name)
            os._exit(128 + sig)  # what a shell reports for a process killed by that signal
        log.info("received %s: shutting down", sig.name)
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await main(stop)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def run_process(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``main(stop)`` on uvloop and return its exit code.

    The first SIGTERM or SIGINT sets ``stop``; ``main`` is expected to drain and return. A second
    signal exits at once with status 128 + its number (143 for SIGTERM, 130 for SIGINT). An
    exception escaping ``main`` is logged and gives status 1.
    """
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        try:
            return runner.run(_supervise(main))
        except Exception:
            log.exception("the process failed")
            return 1
