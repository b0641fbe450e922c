"""The Redis password never leaves the process: a real ``pipeline serve`` and the real ``pipeline``
command against a real redis-server started with a password, every output searched for it while the
server is up, paused (stalled) and killed. HTTP bodies name no absolute server path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from devtools.redis_server import RedisServer, free_port
from pipeline.integrity import RECORD
from pipeline.locks import LockTimeout
from pipeline.publish import Artifact
from pipeline.store.base import FeatureTable, StoreUnavailable
from pipeline.store.redis_store import RedisStore
from pipeline_tests.api_process import ApiProcess, copy_warehouse, get, health, load_features, post, sqlite_serving

BIN = Path(sys.executable).parent
PASSWORD = "Pw-leak-check-7f3a@9"  # '@' so the URL holds it percent-encoded
BODY = {"candidate_restaurant_ids": list(range(0, 200, 7)), "latitude": 13.8, "longitude": 100.6, "max_dist": 20000}


def _leaks(text: str) -> list[str]:
    """The forms of the password found in ``text``."""
    return [form for form in (PASSWORD, urllib.parse.quote(PASSWORD, safe=""), PASSWORD.split("@")[0]) if form in text]


def _pipeline(env: dict, *args: str) -> tuple[int, str]:
    done = subprocess.run([str(BIN / "pipeline"), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def password_redis(tmp_path):
    server = RedisServer(str(tmp_path), password=PASSWORD).start()
    yield server
    server.stop()


def _checked(where: str, text: str) -> str:
    """``text``, after failing the test if it holds the password."""
    assert not _leaks(text), f"the password is in {where}: {text[-3000:]}"
    return text


@pytest.mark.slow
def test_the_redis_password_appears_in_no_http_body_cli_output_or_log(serving_artifacts, password_redis, tmp_path):
    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    env = {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "REDIS_URL": password_redis.url,
           "PIPELINE_ONLINE_STORE": "redis"}

    def pipeline(where: str, *args: str) -> tuple[int, str]:
        code, output = _pipeline(env, *args)
        return code, _checked(where, output)

    store = RedisStore(password_redis.url)
    load_features(store, tables)
    code, output = pipeline("rollback features with nothing kept", "rollback", "features")
    assert code == 1 and "no previous version" in output, output
    load_features(store, tables)
    store.close()
    code, output = pipeline("status, server up", "status")
    assert code == 0 and '"online_store"' in output, output
    code, output = pipeline("rollback features", "rollback", "features")
    assert code == 0 and '"from": 2, "to": 1' in output, output

    api = ApiProcess(tmp_path, env)
    try:
        api.wait_until(ready=True)
        _checked("/health, server up", get(api.base, "/health")[1])
        assert post(api.base, "/recommend/7", BODY)[0] == 200
        password_redis.pause()  # stalled: reads time out
        try:
            status, body, _ = post(api.base, "/recommend/7", BODY)
            _checked("the 503 body, server paused", str(body))
            assert status == 503 and "online store unavailable" in body["error"], body
            _checked("the 503 body, breaker open", str(post(api.base, "/recommend/7", BODY)[1]))
            status, text = get(api.base, "/health")
            _checked("/health, server paused", text)
            assert status == 503 and "unavailable" in text
        finally:
            password_redis.resume()
        password_redis.kill()  # stopped: connections refused
        code, output = pipeline("status, server down", "status")
        assert code == 1 and "redis redis://:***@127.0.0.1" in output, output
        code, output = pipeline("rollback features, server down", "rollback", "features")
        assert code == 1 and "redis://:***@" in output, output
        status, body, _ = post(api.base, "/recommend/7", BODY)
        _checked("the 503 body, server killed", str(body))
        assert status == 503 and "redis://:***@127.0.0.1" in body["error"], body
        status, text = get(api.base, "/health")
        _checked("/health, server killed", text)
        assert status == 503 and "redis://:***@127.0.0.1" in text
    finally:
        log = api.stop()
    _checked("the server log", log)


def test_a_wrong_password_is_a_clear_error_that_names_the_masked_url(password_redis):
    url = password_redis.url.replace(urllib.parse.quote(PASSWORD, safe=""), "not-the-password")
    store = RedisStore(url, timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable) as refused:
            store.live()
    finally:
        store.close()
    message = str(refused.value)
    assert f"redis redis://:***@127.0.0.1:{password_redis.port}/0: AuthenticationError" in message, message
    assert "not-the-password" not in message and not _leaks(message)


@pytest.mark.slow
def test_http_bodies_name_no_absolute_server_path(serving_artifacts, tmp_path):
    """A rejected model version (a file of it vanished) and a deleted SQLite file, as /health and a 503 tell them."""
    path = tmp_path / "online" / "features.db"
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path, path)
    api = ApiProcess(tmp_path, env)
    try:
        good = api.wait_until(ready=True)["model_version"]
        export = Artifact(warehouse.export)
        broken = export.versions_dir / "broken-copy"
        shutil.copytree(export.version_path(good), broken)
        (broken / RECORD).unlink()
        os.symlink(broken, f"{warehouse.export}.tmp-link")
        os.replace(f"{warehouse.export}.tmp-link", warehouse.export)
        deadline = time.monotonic() + 20
        while not health(api.base)["last_reload_failure"]:
            assert time.monotonic() < deadline, "the broken version was not rejected"
            time.sleep(0.1)
        status, health_text = get(api.base, "/health")
        assert status == 200 and "'models/click_model/.export.versions/broken-copy/" in health_text, health_text
        path.unlink()
        status, recommend_body, _ = post(api.base, "/recommend/7", BODY)
        assert status == 503 and "features.db does not exist" in recommend_body["error"], recommend_body
    finally:
        log = api.stop()
    for text in (health_text, str(recommend_body)):
        assert str(tmp_path) not in text and "/tmp/" not in text, text
    assert str(warehouse.root) in log  # the operator's log keeps the full path


def test_a_loaders_wait_and_lock_timeout_name_the_masked_url(password_redis):
    """What a Dagster step logs while it waits for another loader, and its failure when it gives up."""
    holder, waiter = RedisStore(password_redis.url), RedisStore(password_redis.url)
    said: list[str] = []
    try:
        lock = holder._lock(5, None)
        users = FeatureTable(np.arange(3, dtype=np.int64), np.zeros((3, 30), np.float32), "u")
        restaurants = FeatureTable(np.arange(3, dtype=np.int64), np.zeros((3, 10), np.float32), "r")
        with pytest.raises(LockTimeout) as gave_up:
            waiter.publish(users, restaurants, on_wait=said.append, lock_timeout_s=0.3)
        lock.release()
    finally:
        holder.close()
        waiter.close()
    assert said and "redis://:***@127.0.0.1" in said[0] and "redis://:***@127.0.0.1" in str(gave_up.value)
    for text in (*said, str(gave_up.value)):
        _checked("a loader's message", text)


def test_pipeline_worker_output_never_names_the_passwords(tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    env = {"DAGSTER_HOME": str(tmp_path), "PIPELINE_WAREHOUSE_DIR": str(tmp_path),
           "PIPELINE_CELERY_BROKER_URL": f"redis://:{urllib.parse.quote(PASSWORD, safe='')}@{closed}/0",
           "REDIS_URL": f"redis://pipeline:{urllib.parse.quote(PASSWORD, safe='')}@{closed}/1",
           "PIPELINE_ONLINE_STORE": "redis", "PIPELINE_CELERY_TIMEOUT_S": "1"}
    code, output = _pipeline(env, "worker")
    assert code == 2 and "the online store (REDIS_URL) redis://pipeline:***@" in output, output
    assert "PIPELINE_CELERY_BROKER_URL=redis://:***@" in output, output
    _checked("pipeline worker's output", output)


def test_pipeline_serve_masks_credentials_in_every_log_line(monkeypatch, tmp_path, caplog):
    """The app factory of ``pipeline serve`` puts the redacting filter on the handlers of the root and
    uvicorn loggers: a message or a traceback naming the URL is logged masked."""
    import logging

    from pipeline.api.server import build_app
    from pipeline.redaction import RedactingFilter

    monkeypatch.setenv("PIPELINE_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.setenv("PIPELINE_ONLINE_STORE", "sqlite")
    monkeypatch.setenv("PIPELINE_SQLITE_PATH", str(tmp_path / "online" / "features.db"))
    level = logging.getLogger().level
    try:
        build_app()
        url = f"redis://:{urllib.parse.quote(PASSWORD, safe='')}@10.0.0.5:6379/0"
        with caplog.at_level(logging.INFO):
            logging.getLogger("uvicorn.error").error("cannot reach %s", url)
            try:
                raise ConnectionError(f"lost {url}")
            except ConnectionError:
                logging.getLogger("pipeline.api").exception("store failed")
    finally:
        logging.getLogger().setLevel(level)
    assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in logging.getLogger().handlers)
    assert "cannot reach redis://:***@10.0.0.5:6379/0" in caplog.text and "lost redis://:***@" in caplog.text
    _checked("the server's log lines", caplog.text)


@pytest.mark.slow
def test_a_running_pipeline_worker_logs_no_password(password_redis, tmp_path):
    """A worker on a broker and online store that need the password: its banner and log lines."""
    from devtools.celery_workers import celery_workers

    home, warehouse, dataset = tmp_path / "home", tmp_path / "warehouse", tmp_path / "dataset"
    for directory in (home, warehouse, dataset / "train"):
        directory.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINE_WAREHOUSE_DIR": str(warehouse),
           "PIPELINE_DATASET_DIR": str(dataset), "PIPELINE_CELERY_BROKER_URL": password_redis.url,
           "REDIS_URL": password_redis.url, "PIPELINE_ONLINE_STORE": "redis", "PIPELINE_SOURCE": "local"}
    done = subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with celery_workers(env, ["secrets"], tmp_path):
        pass
    log = (tmp_path / "secrets.log").read_text()
    assert "redis://:**" in log and " ready." in log, log[-3000:]  # Celery names its broker, masked
    _checked("the worker's log", log)
