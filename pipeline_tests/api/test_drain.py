"""SIGTERM under load: the server drains (``/health`` not ready, requests still served), then
stops without resetting any request a client had written before the signal (a real
``pipeline serve`` with one and two workers, clients on keep-alive connections)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from pipeline_devtools.api_process import BODY, ApiProcess, sqlite_serving

DRAIN_S = 1.5
PAYLOAD = json.dumps(BODY).encode()


class Client(threading.Thread):
    """Sends requests back to back on a keep-alive connection (a new one when the server closes
    it) until told to stop or the server is gone; records (when the request's bytes were
    written, what came back: a status or the error)."""

    def __init__(self, port: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.sent: list[tuple[float, object]] = []

    def run(self) -> None:
        connection = None
        while not self.stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    connection.connect()
                except OSError:  # the server stopped accepting
                    return
            try:
                connection.request("POST", "/recommend/7", body=PAYLOAD, headers={"Content-Type": "application/json"})
            except OSError:
                connection.close()
                connection = None
                continue  # nothing was written
            written = time.monotonic()
            try:
                response = connection.getresponse()
                response.read()
                self.sent.append((written, response.status))
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as error:
                self.sent.append((written, repr(error)))
                connection.close()
                connection = None


def _health_during(base_port: int, seconds: float) -> list[tuple[int, str]]:
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", base_port, timeout=5)
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            answers.append((response.status, json.loads(response.read())["reason"]))
        except OSError:
            break
        finally:
            connection.close()
        time.sleep(0.1)
    return answers


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_drains_and_answers_every_request_written_before_it(serving_artifacts, tmp_path,
                                                                               workers):
    _, env = sqlite_serving(serving_artifacts, tmp_path)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_API_DRAIN_S": str(DRAIN_S)}, workers=workers)
    stop = threading.Event()
    clients = [Client(api.port, stop) for _ in range(12)]
    try:
        api.wait_until(ready=True)
        for client in clients:
            client.start()
        time.sleep(1.5)
        signalled = time.monotonic()
        api.process.terminate()
        time.sleep(0.6)  # uvicorn's supervisor passes the signal on to its workers within 0.5 s
        health = _health_during(api.port, DRAIN_S - 0.8)
        api.process.wait(timeout=DRAIN_S + 10)
        stopped = time.monotonic()
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=15)
        log = api.stop()
    sent = [record for client in clients for record in client.sent]
    before = [outcome for written, outcome in sent if written < signalled]
    during_drain = [outcome for written, outcome in sent if signalled + 0.2 < written < signalled + DRAIN_S - 0.2]
    assert len(before) > 100, f"too little load: {len(before)} requests before the signal"
    unanswered = [outcome for outcome in before if outcome != 200]
    assert not unanswered, f"{len(unanswered)} of {len(before)} requests written before SIGTERM: {unanswered[:5]}"
    assert during_drain and all(outcome == 200 for outcome in during_drain), during_drain[:5]
    assert health and all(answer == (503, "draining") for answer in health), health
    assert stopped - signalled < DRAIN_S + 6, log[-2000:]


def test_pipelined_requests_already_read_when_the_server_stops_are_answered(redis_api):
    """Redis paused, so the first of three pipelined requests waits for the store (then 503)
    while the other two are queued behind it; SIGTERM (no drain) arrives meanwhile."""
    api, redis_server, _ = redis_api
    request = (b"POST /recommend/7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(PAYLOAD), PAYLOAD))
    redis_server.pause()
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
            sock.sendall(request * 3)
            time.sleep(0.2)
            api.process.terminate()
            received = []
            while chunk := sock.recv(65536):
                received.append(chunk)
        api.process.wait(timeout=10)
    finally:
        redis_server.resume()
    answers = b"".join(received)
    assert answers.count(b"HTTP/1.1 503") == 3, answers[:600]
    assert answers.count(b"online store unavailable") == 3
