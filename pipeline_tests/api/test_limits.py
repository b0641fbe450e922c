"""The API's bounds on a real ``pipeline serve``: bodies over the limit get 413 before parsing and memory
stays flat; slow clients are timed out and do not block others."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

from pipeline_devtools.api_process import BODY, post


def _huge_post(port: int, body: bytes, send_body: bool = True) -> bytes:
    """POST ``body`` over a raw socket and return what the server answered. The server answers
    413 and closes as soon as it sees the Content-Length, so sending may fail half way."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /recommend/7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            if send_body:
                sock.sendall(body)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)
        except (ConnectionResetError, BrokenPipeError):
            return b"(reset after the answer)"


def test_bodies_over_the_limit_get_413_before_parsing_and_memory_stays_flat(sqlite_api):
    api, _, _ = sqlite_api
    huge = json.dumps({**BODY, "candidate_restaurant_ids": list(range(1_500_000))}).encode()  # ~11.5 MB
    maximal = json.dumps({**BODY, "candidate_restaurant_ids": [2**62 + i for i in range(10_000)]}).encode()
    assert 200_000 < len(maximal) < 262_144 and len(huge) > 11_000_000
    status, body, _ = post(api.base, "/recommend/7", raw=maximal)
    assert status == 200, body
    # refused on its Content-Length alone, before a byte of the body is read
    answer = _huge_post(api.port, huge, send_body=False)
    assert answer.startswith(b"HTTP/1.1 413") and b'"field":"body"' in answer, answer[:300]
    baseline = api.rss_mb()
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        for _ in range(3):
            valid = [pool.submit(post, api.base, "/recommend/7", None, maximal, 30) for _ in range(32)]
            oversized = [pool.submit(_huge_post, api.port, huge) for _ in range(32)]
            assert [f.result()[0] for f in valid] == [200] * 32
            assert all(f.result().startswith((b"HTTP/1.1 413", b"(reset")) for f in oversized)
    growth = api.rss_mb() - baseline
    assert growth < 40, f"server memory grew by {growth:.0f} MB under 32 concurrent maximal bodies"


def test_slow_clients_are_timed_out_and_do_not_block_others(sqlite_api):
    api, _, _ = sqlite_api
    connections = []
    for i in range(300):  # half-sent requests: headers never finish, or the body never comes
        sock = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        if i % 2:
            sock.sendall(b"POST /recommend/7 HTTP/1.1\r\nHost: x\r\n")
        else:
            sock.sendall(b"POST /recommend/7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"latitude\": 13")
        connections.append(sock)
    started = time.monotonic()
    assert post(api.base, "/recommend/7", BODY)[0] == 200 and time.monotonic() - started < 1
    answers = []
    for sock in connections:
        chunks = []
        while chunk := sock.recv(65536):  # the server closes every one of them
            chunks.append(chunk)
        answers.append(b"".join(chunks))
        sock.close()
    assert time.monotonic() - started < 8
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert b"request body not received within 1 s" in answers[0]
    assert b"request headers not received in time" in answers[1]
