"""The serving image's requirements (deploy/serving.lock) cover what ``pipeline serve`` imports, at
requirements.lock's versions; and the image (``make image``: deploy/Dockerfile.serve), built here and
run with the tiny served artifacts' warehouse mounted read-only and a SQLite online store beside it,
is healthy and answers as ``pipeline serve`` on this host does with the same settings (format onnx),
without torch or Dagster in it and as a non-root user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline_devtools.api_process import BODY, ApiProcess, get, health, post, sqlite_serving
from pipeline_devtools.redis_server import free_port

ROOT = Path(__file__).parents[2]
IMAGE = "restaurant-pipeline-serve:test"
REQUESTS = [("/recommend/42", BODY), ("/recommend/u00007", {**BODY, "size": 3, "sort_dist": True}),
            ("/recommend/42", {"latitude": 13.8, "longitude": 100.6, "size": 5, "max_dist": 2000}),
            ("/recommend/999999", BODY)]


def _pins(lock: Path) -> dict[str, str]:
    """{normalized name: version} of a pip-compile lock."""
    return {re.sub(r"[-_.]+", "-", name).lower(): version
            for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", lock.read_text(), re.M)}


# The distributions whose modules ``pipeline serve`` imports before it serves (a fresh interpreter), each
# module by the distribution holding its file (a namespace package such as opentelemetry spans several).
_SERVE_IMPORTS = """
import importlib.metadata, pathlib, sys
before = set(sys.modules)
import pipeline.cli, pipeline.api.server
owner = {str(pathlib.Path(d.locate_file(f)).resolve()): d.metadata["Name"]
         for d in importlib.metadata.distributions() for f in (d.files or []) if f.suffix in (".py", ".so")}
found = {owner.get(str(pathlib.Path(m.__file__).resolve())) for name in set(sys.modules) - before
         if (m := sys.modules[name]) is not None and getattr(m, "__file__", None)}
print("\\n".join(sorted(d for d in found if d)))
"""


def test_the_serving_lock_covers_what_pipeline_serve_imports_at_the_main_locks_versions():
    serving, main = _pins(ROOT / "deploy/serving.lock"), _pins(ROOT / "requirements.lock")
    assert {"fastapi", "uvicorn", "onnxruntime", "pyarrow", "h3", "redis"} <= serving.keys()
    assert not {"torch", "dagster", "polars", "onnx"} & serving.keys()
    assert {name: (version, main[name]) for name, version in serving.items()
            if name in main and main[name] != version} == {}
    done = subprocess.run([sys.executable, "-c", _SERVE_IMPORTS], capture_output=True, text=True, check=True)
    imported = {re.sub(r"[-_.]+", "-", name).lower() for name in done.stdout.split()} - {"restaurant-pipeline"}
    assert imported and imported <= serving.keys(), imported - serving.keys()


def _docker_unavailable() -> str:
    """Why the image cannot be built and run here ("" when it can)."""
    if os.geteuid() != 0:
        return "building the image's base (mmdebstrap) and running dockerd take root"
    for tool in ("docker", "mmdebstrap", "make"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y docker.io mmdebstrap; .ci/run does)"
    done = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"the Docker daemon does not answer (start dockerd; .ci/run does): {done.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="module")
def serving_image() -> str:
    """The image, built by ``make image`` (the base and unchanged layers are reused)."""
    reason = _docker_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(["make", "-C", str(ROOT), "image", f"IMAGE={IMAGE}", f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE


def _readable_by_all(root: Path) -> None:
    """Every directory under ``root`` (and itself) searchable and every file readable by any user, as the
    container's user (uid 1000) must find the warehouse; the tests' directories are the owner's only."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, os.stat(directory).st_mode | 0o555)
        for file in files:
            path = os.path.join(directory, file)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)


def _in_container(name: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", name, *command], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_the_serving_image_answers_as_pipeline_serve_does(serving_image, serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    _readable_by_all(warehouse.root)
    # the container's own copy of the store, in a directory its user (uid 1000) may write: readers open the
    # file read-write and WAL keeps its -wal and -shm files beside it
    online = tmp_path / "online"
    online.mkdir(mode=0o777)
    online.chmod(0o777)
    shutil.copyfile(env["PIPELINE_SQLITE_PATH"], online / "features.db")
    (online / "features.db").chmod(0o666)

    host = ApiProcess(tmp_path, {**env, "PIPELINE_API_MODEL_FORMAT": "onnx"})
    name, port = f"pipeline-serve-test-{uuid.uuid4().hex[:8]}", free_port()
    base = f"http://127.0.0.1:{port}"
    started = subprocess.run(
        ["docker", "run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000",
         "--volume", f"{warehouse.root}:/warehouse:ro", "--volume", f"{online}:/online",
         "--env", "PIPELINE_API_DRAIN_S=0", serving_image], capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stderr
        expected = host.wait_until()
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = get(base, "/health", timeout=2)
            except OSError:
                status = None
            if status == 200:
                break
            assert time.monotonic() < deadline, subprocess.run(["docker", "logs", name], capture_output=True,
                                                               text=True).stderr[-3000:]
            time.sleep(0.2)
        served = health(base)
        assert served["model_format"] == expected["model_format"] == "onnx"
        assert (served["model_version"], served["geo_index_version"], served["store"]) == \
            (expected["model_version"], expected["geo_index_version"], expected["store"])
        for path, body in REQUESTS:
            assert post(base, path, body)[:2] == post(host.base, path, body)[:2], path
        assert post(base, *REQUESTS[0])[0] == 200 and post(base, *REQUESTS[-1])[0] == 404
        # the image holds neither torch nor Dagster, and serves as uid 1000
        for module in ("torch", "dagster"):
            missing = _in_container(name, "python3", "-c", f"import {module}")
            assert missing.returncode != 0 and f"No module named '{module}'" in missing.stderr
        assert _in_container(name, "id", "-u").stdout.strip() == "1000"
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)
        host.stop()
