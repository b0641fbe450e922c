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
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import redis

SECURED_SERVERS = {
    "requirepass": {"password": "rp-Secret-0451"},
    "acl user": {"user": "pipeline", "password": "acl-Secret-9920"},
    "tls + acl user": {"user": "pipeline", "password": "tls-Secret-3318", "tls": True},
}
"""The options of :func:`redis_server` for each way a client authenticates: a ``requirepass`` password, an
ACL user, an ACL user over TLS."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tls_files(directory: str) -> dict[str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (``openssl`` CLI):
    paths of ``ca``, ``cert`` and ``key`` (PEM) in ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl is not installed (apt-get install -y openssl)")
    d = Path(directory)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *key, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "2",
         "-subj", "/CN=pipeline test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *key, "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
         "-CAcreateserial", "-out", d / "server.crt", "-days", "2", "-extfile", d / "server.ext"],
    ]
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    for step in steps:
        subprocess.run([str(part) for part in step], check=True, capture_output=True)
    return {"ca": str(d / "ca.crt"), "cert": str(d / "server.crt"), "key": str(d / "server.key")}


class RedisServer:
    """One redis-server process (no persistence) that a test can pause, kill and restart empty
    on the same port.

    ``password`` alone: ``--requirepass``, URL ``redis://:PASSWORD@``. ``user`` and ``password``: an
    ACL user with every permission and the default user disabled, URL ``redis://USER:PASSWORD@``.
    ``tls``: TLS only (``--port 0 --tls-port``), a certificate from a CA made here (``ca_file``),
    clients not asked for certificates, URL ``rediss://``."""

    def __init__(self, workdir: str, port: int | None = None, password: str | None = None,
                 user: str | None = None, tls: bool = False):
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install -y redis-server)")
        if user and not password:
            raise ValueError("an ACL user needs a password")
        self.binary, self.workdir, self.port, self.password = binary, workdir, port or free_port(), password
        self.user, self.tls = user, tls
        self.tls_files = make_tls_files(workdir) if tls else {}
        self.ca_file = self.tls_files.get("ca", "")
        credentials = f"{user or ''}:{urllib.parse.quote(password, safe='')}@" if password else ""
        self.url = f"{'rediss' if tls else 'redis'}://{credentials}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def _arguments(self) -> list[str]:
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls_files["cert"],
                      "--tls-key-file", self.tls_files["key"], "--tls-ca-cert-file", self.tls_files["ca"],
                      "--tls-auth-clients", "no"]
        else:
            listen = ["--port", str(self.port)]
        if self.user:
            auth = ["--user", "default", "off", "--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all"]
        else:
            auth = ["--requirepass", self.password] if self.password else []
        return [self.binary, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.workdir, *auth]

    def client(self, **options) -> redis.Redis:
        """A client of this server (TLS verified with its CA)."""
        tls = {"ssl_ca_certs": self.ca_file} if self.tls else {}
        return redis.Redis.from_url(self.url, **tls, **options)

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        self.process = subprocess.Popen(self._arguments(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client(socket_timeout=1)
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
def redis_server(password: str | None = None, user: str | None = None, tls: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` (see its options), stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="redis-") as workdir:
        server = RedisServer(workdir, password=password, user=user, tls=tls)
        try:
            yield server.start()
        finally:
            server.stop()


@contextlib.contextmanager
def local_redis_server() -> Iterator[str]:
    """Start redis-server on 127.0.0.1, yield its URL, stop it afterwards."""
    with redis_server() as server:
        yield server.url
