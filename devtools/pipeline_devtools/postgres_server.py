"""A throwaway PostgreSQL server on a free loopback port (tests; never a production server): a fresh
cluster in a temporary directory, one password-protected superuser and one database, removed when
stopped. Needs the Debian package postgresql (its binaries are in /usr/lib/postgresql/NN/bin, not on
PATH). initdb and postgres refuse to run as root: as root, the server runs as the ``postgres`` user
the package creates (else ``nobody``) through ``runuser``."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline_devtools.redis_server import free_port

USER = "pipeline"  # the cluster's superuser


def postgres_bin_dir() -> Path:
    """The directory of initdb, pg_ctl, createdb and pg_dump: pg_ctl's on PATH (symlinks followed),
    else the newest /usr/lib/postgresql/NN/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                       key=lambda path: int(path.parents[1].name) if path.parents[1].name.isdigit() else 0)
    if not installed:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql): no pg_ctl on PATH "
                                "nor in /usr/lib/postgresql/*/bin")
    return installed[-1].parent


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when this process is root (None: run as this user)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and there is no postgres or nobody account to run PostgreSQL as")


class PostgresServer:
    """One postgres process on 127.0.0.1:``port`` (its socket and data in a private temporary directory),
    password authentication over TCP, the database ``database`` created."""

    def __init__(self, password: str, database: str = "dagster"):
        self.bin = postgres_bin_dir()
        self.password, self.database, self.user = password, database, USER
        self.host, self.port = "127.0.0.1", free_port()
        self.account = _server_account()
        self.root = Path(tempfile.mkdtemp(prefix="postgres-"))
        self.data, self.log = self.root / "data", self.root / "server.log"

    def _as_server(self, *command: str) -> list[str]:
        program = [str(self.bin / command[0]), *command[1:]]
        return ["runuser", "-u", self.account.pw_name, "--", *program] if self.account else program

    def _client_env(self) -> dict:
        return {**os.environ, "PGPASSWORD": self.password, "PGHOST": self.host, "PGPORT": str(self.port),
                "PGUSER": self.user}

    def start(self) -> PostgresServer:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self.account:
            for path in (self.root, password_file):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        try:
            _run(self._as_server("initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={password_file}",
                                 "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
                                 "--locale=C", "--no-sync"))
        finally:
            password_file.unlink()
        options = f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off"
        _run(self._as_server("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                             "-o", options))
        _run([str(self.bin / "createdb"), self.database], env=self._client_env())
        return self

    def dump(self) -> str:
        """The whole database as SQL (schema and every row), as pg_dump writes it."""
        return _run([str(self.bin / "pg_dump"), "--no-owner", self.database], env=self._client_env())

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._as_server("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w"),
                           capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def _run(command: list[str], env: dict | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


@contextlib.contextmanager
def postgres_server(password: str, database: str = "dagster") -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer`, stopped and removed afterwards."""
    server = PostgresServer(password, database)
    try:
        yield server.start()
    finally:
        server.stop()
