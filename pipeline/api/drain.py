"""The drain: what a server process does between SIGTERM and stopping.

On SIGTERM the process starts draining: ``/health`` answers 503 with reason ``draining`` so a
load balancer takes it out of rotation, while every request is still served (answers carry
``Connection: close`` so clients move to other servers). After ``drain_s`` the server stops as
uvicorn does: it stops accepting, answers every request it has read (pipelined ones included),
closes idle connections, and waits at most its graceful timeout for the answers in progress. A
second SIGTERM, or SIGINT, stops at once (without the drain).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

log = logging.getLogger("pipeline.api")


class Drain:
    """Whether this server process is draining, and since when."""

    def __init__(self) -> None:
        self.started_at: float | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def start(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()

    def install(self, drain_s: float) -> None:
        """Take over SIGTERM from the server (uvicorn's handler, installed before the app starts):
        drain for ``drain_s``, then hand the signal to that handler. Only in the main thread of
        a process (an app served from another thread keeps the server's own handling)."""
        if threading.current_thread() is not threading.main_thread():
            return
        stop = signal.getsignal(signal.SIGTERM)
        if not callable(stop):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(signum, frame) -> None:
            if self.draining or drain_s <= 0:
                stop(signum, frame)
                return
            self.start()
            log.warning("SIGTERM: draining for %g s (health says not ready), then stopping", drain_s)
            loop.call_soon_threadsafe(loop.call_later, drain_s, stop, signum, None)

        signal.signal(signal.SIGTERM, on_sigterm)


DRAIN = Drain()  # one per server process: the protocol and the app share it
