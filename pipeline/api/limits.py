"""The API's bounds: how long it waits for the store and for clients, how large a body may be.

Each is a setting (``pipeline.settings.ApiSettings``), parsed once by ``pipeline serve`` and handed
to each of its workers. Slow clients are bounded in two places: the HTTP protocol
(``pipeline/api/protocol.py``) bounds every phase of a connection, and :class:`BoundedBody`
answers 408 when a body the app reads is not complete within ``body_timeout_s``.
:class:`BoundedBody` also answers 413 to a body over ``max_body_bytes`` before any of it is
parsed: at once when ``Content-Length`` says so, else as soon as the bytes received pass the limit.
(FastAPI's own ``max_body_size`` answers that case in plain text.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.settings import ApiSettings

_DEFAULT = ApiSettings()  # each bound's default and meaning: its setting's


@dataclass(frozen=True)
class ApiLimits:
    """The bounds in force; every one but ``cooldown_s`` is a setting (``PIPELINE_API_*``)."""

    store_timeout_s: float = _DEFAULT.store_timeout_ms / 1000
    deadline_s: float = _DEFAULT.deadline_ms / 1000
    cooldown_s: float = 0.5           # after a store failure, refuse at once for this long, then probe
    max_body_bytes: int = _DEFAULT.max_body_bytes
    header_timeout_s: float = _DEFAULT.header_timeout_s
    body_timeout_s: float = _DEFAULT.body_timeout_s
    keepalive_s: float = _DEFAULT.keepalive_s
    max_header_bytes: int = _DEFAULT.max_header_bytes
    max_connections: int = _DEFAULT.max_connections
    linger_s: float = _DEFAULT.linger_s
    linger_bytes: int = _DEFAULT.linger_bytes
    drain_s: float = _DEFAULT.drain_s
    graceful_s: float = _DEFAULT.graceful_s

    @classmethod
    def from_settings(cls, api: ApiSettings) -> ApiLimits:
        """The limits of the API's settings (milliseconds there, seconds here)."""
        return cls(store_timeout_s=api.store_timeout_ms / 1000, deadline_s=api.deadline_ms / 1000,
                   max_body_bytes=api.max_body_bytes, header_timeout_s=api.header_timeout_s,
                   body_timeout_s=api.body_timeout_s, keepalive_s=api.keepalive_s,
                   max_header_bytes=api.max_header_bytes, max_connections=api.max_connections,
                   linger_s=api.linger_s, linger_bytes=api.linger_bytes, drain_s=api.drain_s,
                   graceful_s=api.graceful_s)

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_s", "max_header_bytes", "max_connections",
                     "linger_s", "linger_bytes", "graceful_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"API limit {name} must be positive, got {getattr(self, name)}")
        if self.drain_s < 0:
            raise ValueError(f"PIPELINE_API_DRAIN_S must be 0 or more, got {self.drain_s:g}")
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
                async with asyncio.timeout_at(deadline[0]):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"request body not received within {self.timeout_s:g} s",
                                    headers={"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _too_large(self.max_bytes)
            return message

        await self.app(scope, receive_with_deadline, send)
