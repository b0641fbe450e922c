"""The API's bounds: how long it waits for the store and for clients, how large a body may be.

Each is a setting (``pipeline/config.py``), so ``pipeline serve`` and each of its workers read the
same values. Slow clients are bounded in two places: the HTTP protocol closes a connection whose
request headers are not complete within ``header_timeout_s`` (uvicorn has no such timeout of
its own), and :class:`BoundedBody` answers 408 when a body is not complete within
``body_timeout_s``. :class:`BoundedBody` also answers 413 to a body over ``max_body_bytes``
before any of it is parsed: at once when ``Content-Length`` says so, else as soon as the bytes
received pass the limit. (FastAPI's own ``max_body_size`` answers that case in plain text.)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipeline.config import setting


@dataclass(frozen=True)
class ApiLimits:
    store_timeout_s: float = 0.2      # connect and read timeout of every store call
    deadline_s: float = 0.5           # how long a request waits for the store, whatever happens there
    cooldown_s: float = 0.5           # after a store failure, refuse at once for this long, then probe
    max_body_bytes: int = 262_144     # 10,000 int64 candidate ids fit in ~210 KB of JSON
    header_timeout_s: float = 5.0
    body_timeout_s: float = 5.0

    @classmethod
    def from_settings(cls) -> ApiLimits:
        return cls(store_timeout_s=float(setting("PIPELINE_STORE_TIMEOUT_MS")) / 1000,
                   deadline_s=float(setting("PIPELINE_API_DEADLINE_MS")) / 1000,
                   max_body_bytes=int(setting("PIPELINE_API_MAX_BODY_BYTES")),
                   header_timeout_s=float(setting("PIPELINE_API_HEADER_TIMEOUT_S")),
                   body_timeout_s=float(setting("PIPELINE_API_BODY_TIMEOUT_S")))

    def __post_init__(self) -> None:
        if self.deadline_s <= self.store_timeout_s:
            raise ValueError(f"PIPELINE_API_DEADLINE_MS ({self.deadline_s * 1000:g}) must exceed "
                             f"PIPELINE_STORE_TIMEOUT_MS ({self.store_timeout_s * 1000:g})")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body larger than {limit} bytes", headers={"Connection": "close"})


class BoundedBody:
    """413 for a body over ``max_bytes``, 408 when a body is not complete within ``timeout_s``
    of its first read; both raised as HTTP errors, so the app answers them in its own format."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            async def refuse() -> Message:
                raise _too_large(self.max_bytes)
            return await self.app(scope, refuse, send)
        loop = asyncio.get_running_loop()
        deadline: list[float] = []
        complete, received = False, 0

        async def receive_with_deadline() -> Message:
            nonlocal complete, received
            if complete:  # after the body: only a disconnect can come, wait for it unbounded
                return await receive()
            if not deadline:
                deadline.append(loop.time() + self.timeout_s)
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline[0] - loop.time()))
            except TimeoutError:
                raise HTTPException(408, f"request body not received within {self.timeout_s:g} s",
                                    headers={"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _too_large(self.max_bytes)
            return message

        await self.app(scope, receive_with_deadline, send)


_HEADER_TIMEOUT_BODY = json.dumps({"error": "request headers not received in time"}).encode()


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request headers are not complete
    within ``PIPELINE_API_HEADER_TIMEOUT_S`` of the connection opening or the request starting
    (idle keep-alive connections are closed by uvicorn's own keep-alive timeout)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_timeout_s = float(setting("PIPELINE_API_HEADER_TIMEOUT_S"))
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._disarm()  # the keep-alive timeout takes over until the next request begins
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: " + str(len(_HEADER_TIMEOUT_BODY)).encode()
                             + b"\r\n\r\n" + _HEADER_TIMEOUT_BODY)
        self.transport.close()
