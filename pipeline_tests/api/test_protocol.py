"""Every phase of a connection is bounded, and every client reads the answer it was given.

A real ``pipeline serve`` on a real socket: clients that trickle a body, a pipelined request or
their headers are closed within the deadline of the phase they are in; idle keep-alive
connections are closed; headers over the cap get 431; connections over the cap get 503; a body
over the limit gets 413 that ``http.client``, ``httpx`` and ``curl`` all read, because the server
keeps reading (and discarding) for a bounded time before it closes."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time

import httpx
import pytest

from pipeline_devtools.api_process import BODY, ApiProcess, post, sqlite_serving

TIMEOUTS = {"PIPELINE_API_HEADER_TIMEOUT_S": "1", "PIPELINE_API_BODY_TIMEOUT_S": "1",
            "PIPELINE_API_KEEPALIVE_S": "1", "PIPELINE_API_LINGER_S": "1",
            "PIPELINE_API_MAX_HEADER_BYTES": "8192", "PIPELINE_API_MAX_CONNECTIONS": "40"}
COMPLETE_GET = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def api(serving_artifacts, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("connections")
    _, env = sqlite_serving(serving_artifacts, tmp_path)
    server = ApiProcess(tmp_path, {**env, **TIMEOUTS})
    server.wait_until(ready=True)
    yield server
    server.stop()


def _trickle(port: int, head: bytes, drip: bytes = b"", interval_s: float = 0.3,
             give_up_s: float = 8.0) -> tuple[float | None, bytes]:
    """Send ``head``, then one byte of ``drip`` every ``interval_s`` (more often than any
    deadline); (seconds until the server closed, or None if it was still open after
    ``give_up_s``; everything the server sent)."""
    started = time.monotonic()
    received = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(interval_s)
        position = 0
        while time.monotonic() - started < give_up_s:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if position < len(drip):
                    try:
                        sock.sendall(drip[position:position + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        return time.monotonic() - started, b"".join(received)
                    position += 1
                continue
            except ConnectionResetError:
                return time.monotonic() - started, b"".join(received)
            if not chunk:
                return time.monotonic() - started, b"".join(received)
            received.append(chunk)
    return None, b"".join(received)


def _post_head(length: int, path: str = "/recommend/7") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


@pytest.mark.slow
@pytest.mark.parametrize("case, head, drip, first_status", [
    # refused on its Content-Length at once; the body then trickles
    ("huge body", _post_head(100_000_000), b"x" * 100, b"413"),
    # answered without reading its body (GET /health ignores it); the body then trickles
    ("unread body", b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"x" * 100, b"200"),
    # a body under the limit that never completes
    ("slow body", _post_head(1000), b"{" * 100, b"408"),
    # a complete request, then half of the headers of a pipelined one
    ("pipelined headers", COMPLETE_GET + b"GET /health HTTP/1.1\r\nHo", b"st: x\r\nX-Slow: " + b"a" * 100, b"200"),
    # a complete request, then a pipelined one whose body never completes
    ("pipelined body", COMPLETE_GET + _post_head(1000), b"{" * 100, b"200"),
    # headers that never complete
    ("slow headers", b"GET /health HTTP/1.1\r\nHo", b"st: x\r\nX-Slow: " + b"a" * 100, b"408"),
])
def test_a_trickling_client_is_closed_within_the_deadline_of_its_phase(api, case, head, drip, first_status):
    closed_after, answer = _trickle(api.port, head, drip)
    assert closed_after is not None, f"{case}: still open after 8 s; received {answer[:200]!r}"
    # 1 s for the phase, then at most 1 s of lingering for what the client still sends
    assert closed_after < 3.5, (case, closed_after)
    assert answer.startswith(b"HTTP/1.1 " + first_status), (case, answer[:200])
    assert post(api.base, "/recommend/7", BODY)[0] == 200


def test_an_idle_keep_alive_connection_is_closed(api):
    closed_after, answer = _trickle(api.port, COMPLETE_GET)
    assert answer.startswith(b"HTTP/1.1 200") and closed_after is not None and 0.9 < closed_after < 2.5


def test_headers_over_the_cap_get_431_and_are_not_buffered_unbounded(api):
    # complete headers over the cap
    _, answer = _trickle(api.port, b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 9000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("request headers larger than 8192")
    # many small headers over the cap
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 60) for i in range(200))
    _, answer = _trickle(api.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    # one header value that never ends: refused once it passes the cap, not when it completes
    closed_after, answer = _trickle(api.port, b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 200_000)
    assert answer.startswith(b"HTTP/1.1 431") and closed_after is not None and closed_after < 0.9, closed_after


def test_connections_over_the_cap_get_503_and_the_others_are_served(api):
    idle = [socket.create_connection(("127.0.0.1", api.port), timeout=10) for _ in range(45)]
    try:
        time.sleep(0.2)
        status, body, _ = post(api.base, "/recommend/7", BODY)
        assert status == 503 and "connections" in body["error"], body
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert post(api.base, "/recommend/7", BODY)[0] == 200


TEN_MB = json.dumps({**BODY, "candidate_restaurant_ids": list(range(1_300_000))}).encode()


def test_http_client_reads_the_413_of_a_body_over_the_limit(api):
    assert len(TEN_MB) > 10_000_000
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        connection.request("POST", "/recommend/7", body=TEN_MB, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 413 and json.loads(response.read())["field"] == "body"
        connection.close()


def test_httpx_reads_the_413_of_a_body_over_the_limit(api):
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            response = client.post(f"{api.base}/recommend/7", content=TEN_MB,
                                   headers={"Content-Type": "application/json"})
            assert response.status_code == 413 and response.json()["field"] == "body"


def test_curl_reads_the_413_of_a_body_over_the_limit(api, tmp_path):
    body = tmp_path / "body.json"
    body.write_bytes(TEN_MB)
    for expect in ("Expect: 100-continue", "Expect:"):  # curl waits for 100 Continue unless told not to
        result = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", expect,
                                 "-H", "Content-Type: application/json", "--data-binary", f"@{body}",
                                 f"{api.base}/recommend/7"], capture_output=True, text=True, timeout=30)
        answer, status = result.stdout.rsplit("\n", 1)
        assert (result.returncode, status) == (0, "413"), (expect, result.stderr)
        assert json.loads(answer)["field"] == "body"
