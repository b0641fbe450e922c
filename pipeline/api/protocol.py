"""uvicorn's httptools protocol with a deadline for every phase of a connection, a header cap,
a connection cap, a lingering close, and the drain's ``Connection: close``.

uvicorn bounds only the idle time between requests, and only until the next byte arrives: a
client trickling a request body the app does not read, or the headers of a pipelined request,
holds its connection forever. Here one timer per connection bounds the phase being read:

- ``headers``: from the connection opening or a request's first byte, its headers must be
  complete within ``header_timeout_s`` (else 408 and the connection closed);
- ``body``: from the end of the headers, the body must be complete within ``body_timeout_s``
  (the app answers 408 itself when it reads the body, see ``limits.BoundedBody``; a body it
  never reads ends the connection after its answer);
- ``idle``: after an answer, the next request must begin within ``keepalive_s``.

Time spent while the server itself holds reading (a pipelined request waiting for the one
before it, a body the app has not consumed) or is still answering is not counted against the
client. Headers over ``max_header_bytes`` (request line included) get 431, as soon as that many
bytes arrived, complete or not. A connection opened while ``max_connections`` are already open
in this worker gets 503 to its first request, then is closed.

A close after an answer, or while the client may still be sending (an early 413, 408 or 431,
any answer given before its request was read to the end), is lingering: the answer is written,
the server's side is shut for writing, and what the client still sends is read and discarded
until it closes, for at most ``linger_s`` and ``linger_bytes``. Closing at once would make the
kernel reset the connection on the client's unread bytes and discard the answer before the
client reads it. Idle connections (nothing of a request received) are closed at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipeline.api.drain import DRAIN
from pipeline.api.limits import ApiLimits


def _answer(status: str, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


class _LingeringTransport:
    """The connection's transport as uvicorn's request cycles see it: ``close`` lingers when
    the client may still be sending; everything else is the real transport's."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpProtocol):
        self._transport, self._protocol = transport, protocol

    def close(self) -> None:
        self._protocol.close_connection()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class BoundedHttpProtocol(HttpToolsProtocol):
    """See the module docstring. ``limits`` come from the server (``functools.partial`` binds them)."""

    def __init__(self, *args, limits: ApiLimits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.lingering = False
        self._phase = "new"                   # new (nothing received), headers, body, idle, "" (answering)
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0                # of the current request's complete URL and header fields
        self._unparsed_header_bytes = 0       # received while its headers were incomplete
        self._over_cap = False
        self._lingered_bytes = 0
        self._feed_other_bytes = 0            # bytes of other requests in the data being parsed
        self._lost = False
        self._real_transport: asyncio.Transport  # set by connection_made, which asyncio calls first
        self.app = self._closing_when_draining(self.app)

    # ----- the connection

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._real_transport = transport
        # a proxy of the transport (every attribute but close and is_closing is the real one's), which
        # the checker cannot see through __getattr__
        self.transport = cast(asyncio.Transport, _LingeringTransport(transport, self))
        self._over_cap = len(self.connections) > self.limits.max_connections
        self._arm("new")

    def connection_lost(self, exc) -> None:
        self._lost = True
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._lingered_bytes += len(data)
            if self._lingered_bytes > self.limits.linger_bytes:
                self._real_transport.close()
            return
        reading_headers, self._feed_other_bytes = self._phase == "headers", 0
        super().data_received(data)
        if self._phase == "headers" and not self.lingering:
            # headers begun before this data: all of it is theirs; else what other requests did not take
            self._unparsed_header_bytes += len(data) if reading_headers else max(0, len(data) - self._feed_other_bytes)
            self._check_header_size()

    def eof_received(self) -> None:
        if self.lingering:
            self._real_transport.close()  # the client is done sending: the answer was read or never will be

    def close_connection(self) -> None:
        """Close an idle connection now; linger after an answer or with a request partly read
        (see the module docstring): a reset would destroy an answer the client has not read yet."""
        if self.lingering or self._real_transport.is_closing():
            return
        if self._lost or self._phase in ("new", "idle"):
            self._disarm()
            self._real_transport.close()
            return
        self.lingering = True
        self._disarm()
        self.flow.resume_reading()
        if self._real_transport.can_write_eof():
            self._real_transport.write_eof()  # after what was written: the answer
        self._timer = self.loop.call_later(self.limits.linger_s, self._real_transport.close)

    def _refuse(self, status: str, message: str, extra: bytes = b"") -> None:
        """Answer a request the app never sees, then close."""
        self._real_transport.write(_answer(status, message, extra))
        self.close_connection()

    # ----- deadlines

    def _arm(self, phase: str) -> None:
        self._disarm()
        self._phase = phase
        seconds = {"new": self.limits.header_timeout_s, "headers": self.limits.header_timeout_s,
                   "body": self.limits.body_timeout_s, "idle": self.limits.keepalive_s}.get(phase)
        if seconds is not None:
            self._timer = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _expired(self, phase: str) -> None:
        self._timer = None
        if self.lingering or self._real_transport.is_closing():
            return
        if self.flow.read_paused or (phase == "body" and self._answering()):
            self._arm(phase)  # the server holds the client up, not the other way round
            return
        if phase in ("new", "headers") and self._answering():
            self.cycle.keep_alive = False  # answer the request in progress, then close
            self.flow.pause_reading()
            return
        if phase in ("new", "headers"):
            self._refuse("408 Request Timeout", "request headers not received in time")
        else:  # an idle connection, or a body nobody reads after its request was answered
            self.close_connection()

    # ----- the parser's callbacks

    def on_message_begin(self) -> None:
        if self.lingering:
            return
        super().on_message_begin()
        self._header_bytes = self._unparsed_header_bytes = 0
        self._arm("headers")

    def on_url(self, url: bytes) -> None:
        if self.lingering:
            return
        super().on_url(url)
        self._header_bytes += len(url) + 16
        self._check_header_size()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.lingering:
            return
        super().on_header(name, value)
        self._header_bytes += len(name) + len(value) + 4
        self._check_header_size()

    def _check_header_size(self) -> None:
        if max(self._header_bytes, self._unparsed_header_bytes) > self.limits.max_header_bytes:
            self._refuse("431 Request Header Fields Too Large",
                         f"request headers larger than {self.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        if self.lingering:
            return
        if self._over_cap:
            self._phase = "body"  # what follows is not read: linger
            self._refuse("503 Service Unavailable", f"too many connections to this worker (at most "
                         f"{self.limits.max_connections}); retry", b"retry-after: 1\r\n")
            return
        self._feed_other_bytes += self._header_bytes
        self._arm("body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.lingering:
            self._feed_other_bytes += len(body)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.lingering:
            return
        self._disarm()
        self._phase = ""
        super().on_message_complete()
        if not self._answering():  # answered before its body was read to the end
            self._arm("idle")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.lingering and self._phase == "" and not self._answering():
            self._arm("idle")  # a request already begun keeps the deadline of its phase

    # ----- the drain

    def _closing_when_draining(self, app):
        """The app, answering with ``Connection: close`` while the server drains, unless this
        connection has more requests queued or begun (they are answered first)."""
        async def app_closing_when_draining(scope, receive, send):
            if not DRAIN.draining:
                return await app(scope, receive, send)

            async def send_closing(message):
                if (message["type"] == "http.response.start" and DRAIN.draining and not self.pipeline
                        and self._phase in ("", "idle")):
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
                await send(message)
            await app(scope, receive, send_closing)
        return app_closing_when_draining
