"""``pipeline worker`` and the Celery configuration runs and workers share: a worker without the shared
state refuses to start and says why, the broker URL stays out of the runs' configuration, the broker and
backend connect over TLS with auth, and no output of a worker names a password (real redis-servers, real
worker processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from pipeline_devtools.celery_workers import celery_workers
from pipeline_devtools.commands import pipeline_command
from pipeline_devtools.leaks import PASSWORD, checked
from pipeline_devtools.redis_server import SECURED_SERVERS, free_port, redis_server

BIN = Path(sys.executable).parent


def test_a_worker_without_the_shared_state_refuses_to_start_and_says_what_is_missing(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PIPELINE_WAREHOUSE_DIR": "data/warehouse",
           "PIPELINE_DATASET_DIR": str(tmp_path / "no-dataset"), "PIPELINE_SQLITE_PATH": str(tmp_path / "f.db"),
           "PIPELINE_CELERY_BROKER_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0",
           "PIPELINE_CELERY_TIMEOUT_S": "1"}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for name in ("REDIS_URL", "PIPELINE_ONLINE_STORE", "PIPELINE_SOURCE"):
        env.pop(name, None)
    done = subprocess.run([str(BIN / "pipeline"), "worker"], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "PIPELINE_WAREHOUSE_DIR='data/warehouse' is relative" in done.stderr
    assert f"PIPELINE_DATASET_DIR={tmp_path / 'no-dataset'} has no train/ directory" in done.stderr
    assert f"DAGSTER_HOME={tmp_path} has no Dagster storage yet" in done.stderr  # not the runs' instance
    assert not (tmp_path / "history").exists()  # and the worker did not create one
    assert "the broker PIPELINE_CELERY_BROKER_URL=redis://:***@127.0.0.1:" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout  # the password is never printed
    assert "ready." not in done.stdout


def test_the_celery_executor_is_configured_from_the_settings_without_baking_in_the_broker_url(monkeypatch):
    from pipeline.defs.executor import executor_from_settings
    from pipeline.settings import load_settings
    from pipeline.worker import executor_config

    monkeypatch.setenv("PIPELINE_EXECUTOR", "celery")
    monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL", "redis://:secret@broker:6379/0")
    monkeypatch.delenv("PIPELINE_CELERY_BACKEND_URL", raising=False)
    assert executor_from_settings(load_settings()).name == "celery"
    config = executor_config(load_settings())
    assert "secret" not in json.dumps(config)  # the run's stored configuration names the variable
    assert config["broker"] == config["backend"] == {"env": "PIPELINE_CELERY_BROKER_URL"}
    assert config["config_source"]["broker_transport_options"]["socket_timeout"] == 10.0


@pytest.fixture(params=list(SECURED_SERVERS), scope="module")
def server(request):
    with redis_server(**SECURED_SERVERS[request.param]) as started:
        yield started


def test_the_celery_broker_and_backend_connect_over_tls_with_auth(monkeypatch):
    pytest.importorskip("dagster_celery")
    from pipeline import worker
    from pipeline.settings import load_settings

    with redis_server(**SECURED_SERVERS["tls + acl user"]) as server:
        monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL", server.url)
        monkeypatch.delenv("PIPELINE_CELERY_BACKEND_URL", raising=False)
        monkeypatch.setenv("PIPELINE_CELERY_TIMEOUT_S", "3")
        monkeypatch.setenv("PIPELINE_REDIS_CA_FILE", server.ca_file)
        settings = load_settings()
        config = worker.executor_config(settings)["config_source"]
        expected_tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": server.ca_file}
        assert config["broker_use_ssl"] == expected_tls and config["redis_backend_use_ssl"] == expected_tls
        app = worker.celery_app(settings)
        assert worker.broker_problem(app, settings) is None
        assert app.backend.client.ping()  # the result backend, over TLS with the same CA
        monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL",
                           server.url.replace(SECURED_SERVERS["tls + acl user"]["password"], "Wrong-Pass-5521"))
        wrong = load_settings()
        problem = worker.broker_problem(worker.celery_app(wrong), wrong)
        assert problem and "rediss://pipeline:***@127.0.0.1" in problem and "Wrong-Pass-5521" not in problem, problem


BIN = Path(sys.executable).parent


def test_pipeline_worker_output_never_names_the_passwords(tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    env = {"DAGSTER_HOME": str(tmp_path), "PIPELINE_WAREHOUSE_DIR": str(tmp_path),
           "PIPELINE_CELERY_BROKER_URL": f"redis://:{urllib.parse.quote(PASSWORD, safe='')}@{closed}/0",
           "REDIS_URL": f"redis://pipeline:{urllib.parse.quote(PASSWORD, safe='')}@{closed}/1",
           "PIPELINE_ONLINE_STORE": "redis", "PIPELINE_CELERY_TIMEOUT_S": "1"}
    code, output = pipeline_command(env, "worker")
    assert code == 2 and "the online store (REDIS_URL) redis://pipeline:***@" in output, output
    assert "PIPELINE_CELERY_BROKER_URL=redis://:***@" in output, output
    checked("pipeline worker's output", output)


@pytest.mark.slow
def test_a_running_pipeline_worker_logs_no_password(password_redis, tmp_path):
    """A worker on a broker and online store that need the password: its banner and log lines."""

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
    checked("the worker's log", log)
