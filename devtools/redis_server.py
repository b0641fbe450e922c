"""A throwaway redis-server on a free loopback port (tests and benchmarks; never a production
server). Needs the Debian package redis-server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process (no persistence) that a test can pause, kill and restart empty
    on the same port."""

    def __init__(self, workdir: str, port: int | None = None, password: str | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install -y redis-server)")
        self.binary, self.workdir, self.port, self.password = binary, workdir, port or free_port(), password
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", self.workdir,
                                         *(["--requirepass", self.password] if self.password else [])],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: everything it held is gone (no persistence)."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()  # a paused server cannot handle SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextlib.contextmanager
def redis_server(password: str | None = None) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` (requiring ``password`` when given), stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="redis-") as workdir:
        server = RedisServer(workdir, password=password)
        try:
            yield server.start()
        finally:
            server.stop()


@contextlib.contextmanager
def local_redis_server() -> Iterator[str]:
    """Start redis-server on 127.0.0.1, yield its URL, stop it afterwards."""
    with redis_server() as server:
        yield server.url
