"""An HTTP proxy on loopback that forwards to a real server and fails chosen requests on purpose
(a status code instead of the answer), counting what it saw: how tests make a BigQuery endpoint
throttle, break or refuse without mocking the client."""

from __future__ import annotations

import contextlib
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FaultProxy:
    target: str                                  # http://127.0.0.1:P
    # (method, path) → a status to answer with instead of forwarding, or None to forward
    fault: Callable[[str, str], int | None] = lambda method, path: None
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    url: str = ""


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _any(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = proxy.fault(self.command, self.path)
            if status is not None:
                payload = (b'{"error": {"code": %d, "message": "injected by the fault proxy", "errors": []}}'
                           % status)
                proxy.seen.append((self.command, self.path, status))
                return self._reply(status, payload, "application/json")
            request = urllib.request.Request(proxy.target + self.path, data=body or None, method=self.command,
                                             headers={k: v for k, v in self.headers.items()
                                                      if k.lower() not in ("host", "content-length")})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer, status, kind = response.read(), response.status, response.headers.get("Content-Type")
            except urllib.error.HTTPError as error:
                answer, status, kind = error.read(), error.code, error.headers.get("Content-Type")
            proxy.seen.append((self.command, self.path, status))
            self._reply(status, answer, kind or "application/json")

        def _reply(self, status: int, payload: bytes, kind: str):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    return Handler


@contextlib.contextmanager
def fault_proxy(target: str, fault: Callable[[str, str], int | None] | None = None) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target, fault or (lambda method, path: None))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
