"""``pipeline serve`` as a real process for tests, and small HTTP helpers that never hang."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.data.layout import Warehouse
from pipeline.store.base import FeatureTable
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.commands import stop
from pipeline_devtools.published_copies import copy_warehouse
from pipeline_devtools.redis_server import free_port

BODY = {"candidate_restaurant_ids": list(range(0, 2000, 7)), "latitude": 13.8, "longitude": 100.6,
        "max_dist": 20000}
"""A request body for the tiny dataset's artifacts."""

BIN = Path(sys.executable).parent


def post(base: str, path: str, body=None, raw: bytes | None = None, timeout: float = 10,
         headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers with lower-case names) of a POST; a non-JSON answer fails the test."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), {k.lower(): v for k, v in error.headers.items()}


def get(base: str, path: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def health(base: str) -> dict:
    return json.loads(get(base, "/health")[1])


def load_features(store, tables) -> None:
    """Publish the tables' user and restaurant snapshots as the store's live version."""
    store.publish(FeatureTable.of(tables.user_snapshot), FeatureTable.of(tables.restaurant_snapshot))


def sqlite_serving(serving_artifacts, tmp_path: Path, db_path: Path | None = None) -> tuple[Warehouse, dict]:
    """A private copy of the served artifacts and a SQLite store loaded with their features: the
    warehouse and the settings that serve them."""
    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    path = db_path or tmp_path / "features.db"
    store = SQLiteStore(path)
    load_features(store, tables)
    store.close()
    return warehouse, {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "PIPELINE_ONLINE_STORE": "sqlite",
                       "PIPELINE_SQLITE_PATH": str(path)}


def metric(base: str, name: str, labels: str) -> float:
    """The value of one series of ``/metrics`` (``labels`` as written between the braces, or empty); a
    series not there fails the caller."""
    text = get(base, "/metrics")[1]
    series = f"{name}{{{labels}}}" if labels else name
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert found, f"{series} not in /metrics"
    return float(found.group(1))


def timed(call):
    """(``call()``'s result, the seconds it took)."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def wait_for(condition, timeout_s: float = 20, what: str = ""):
    """``condition()``'s first truthy result, polled every 0.1 s; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


class ApiProcess:
    """``pipeline serve`` on a free port with the given settings; its stderr goes to a file."""

    def __init__(self, log_dir: Path, env: dict[str, str], workers: int = 1, poll_interval_s: float = 0.2):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"api-{self.port}.log"
        self._log_handle = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        # FastAPI's deprecation warnings are errors in the server too; no load balancer waits for a drain
        env = {**os.environ, "PYTHONWARNINGS": "error::fastapi.exceptions.FastAPIDeprecationWarning",
               "PIPELINE_API_DRAIN_S": "0", **env}
        self.process = subprocess.Popen(
            [str(BIN / "pipeline"), "serve", "--port", str(self.port), "--workers", str(workers),
             "--poll-interval", str(poll_interval_s)], env=env, stdout=self._log_handle, stderr=subprocess.STDOUT)

    def wait_until(self, ready: bool = True, timeout_s: float = 60) -> dict:
        """Wait until /health answers (and reports ready, if asked); returns its body."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                body = health(self.base)
                if body["ready"] or not ready:
                    return body
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the API did not become ready: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The server's process and its workers'."""
        return [self.process.pid, *[int(p) for p in subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()]]

    def rss_mb(self) -> float:
        """Resident memory of the server (and its workers), MB."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024

    def stop(self) -> str:
        """Stop the server; its log."""
        stop(self.process)
        self._log_handle.close()
        return self.log.read_text()
