"""A TCP proxy on loopback whose server-to-client bytes arrive a fixed delay after the server sent
them: a long link (a large bandwidth-delay product) between a client and a local server, for tests
of what a client holds in memory when the network can carry more than it reads."""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Iterator


def _forward(source: socket.socket, target: socket.socket, delay_s: float) -> None:
    """Copy ``source`` to ``target``, each chunk sent ``delay_s`` after it was read, until ``source`` ends."""
    in_flight: collections.deque[tuple[float, bytes]] = collections.deque()
    changed = threading.Condition()
    ended = False

    def deliver() -> None:
        while True:
            with changed:
                changed.wait_for(lambda: in_flight or ended)
                if not in_flight:
                    break
                due, chunk = in_flight.popleft()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                target.sendall(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=deliver, daemon=True)
    sender.start()
    while True:
        try:
            chunk = source.recv(1 << 20)
        except OSError:
            chunk = b""
        with changed:
            if chunk:
                in_flight.append((time.monotonic() + delay_s, chunk))
            else:
                ended = True
            changed.notify()
        if not chunk:
            break
    sender.join()


@contextlib.contextmanager
def delayed_link(target: str, delay_s: float) -> Iterator[str]:
    """Forward connections to ``target`` (host:port); yields the link's host:port. Client-to-server
    bytes pass at once, server-to-client bytes ``delay_s`` late, so a ping's answer comes one delay
    after the data sent before it."""
    host, port = target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed
                return
            server = socket.create_connection((host, int(port)))
            connections.extend((client, server))
            threading.Thread(target=_forward, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=_forward, args=(server, client, delay_s), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
