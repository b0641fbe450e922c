"""The documented multi-machine setup (docs/OPERATIONS.md, "Running on more machines") run for real on one
machine: Dagster's storage in a real PostgreSQL (deploy/dagster-postgres.yaml, the connection from the
environment), two real Celery workers, the broker and the online store on a redis-server that requires a
password. The feature snapshots with the online store's load, a backfill and a training run succeed, and
neither password appears in any output, log, file, the broker's keys or the whole Dagster database."""

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import zlib

import dagster as dg
import psycopg2
import pytest
import redis
import yaml

from pipeline_devtools.celery_workers import celery_workers
from pipeline_devtools.dagster_runs import BIN, ROOT, launch, run_environment
from pipeline_devtools.postgres_server import postgres_bin_dir, postgres_server
from pipeline_devtools.redis_server import redis_server

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]


def test_the_postgres_instance_settings_are_deploy_dagster_yaml_with_storage_from_the_environment_and_psycopg2():
    postgres = yaml.safe_load((ROOT / "deploy/dagster-postgres.yaml").read_text())
    local = yaml.safe_load((ROOT / "deploy/dagster.yaml").read_text())
    storage = postgres.pop("storage")
    assert postgres == local
    connection = storage["postgres"]["postgres_db"]
    assert connection.pop("scheme") == "postgresql+psycopg2"  # the locked driver, not SQLAlchemy's default
    helm = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
    assert helm["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"  # the chart's instance, the same
    assert all(isinstance(value, dict) and set(value) == {"env"} for value in connection.values())


def _require_servers() -> None:
    """Skip without the Debian packages postgresql and redis-server (fail in CI: .ci/run installs them)."""
    try:
        postgres_bin_dir()
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install -y redis-server)")
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _readable(value: bytes) -> str:
    """``value`` as text, with a kombu message's base64 body (what the Redis transport stores) decoded."""
    text = value.decode(errors="replace")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = json.loads(text)
        if message.get("properties", {}).get("body_encoding") == "base64":
            text += "\n" + base64.b64decode(message["body"]).decode(errors="replace")
    return text


def _redis_contents(url: str) -> str:
    """Every key and value of the Redis database at ``url``, as text (messages decoded)."""
    client = redis.Redis.from_url(url)
    read = {"string": lambda key: [client.get(key)], "list": lambda key: client.lrange(key, 0, -1),
            "hash": lambda key: [v for pair in client.hgetall(key).items() for v in pair],
            "set": client.smembers, "zset": lambda key: client.zrange(key, 0, -1)}
    try:
        return "\n".join(f"{key!r} " + " ".join(_readable(value) for value in read.get(
            client.type(key).decode(), lambda _: [])(key) if value is not None) for key in client.scan_iter())
    finally:
        client.close()


def _snapshots(postgres) -> str:
    """Dagster's job and execution-plan snapshots (resource and config defaults among them), which it
    stores zlib-compressed: a text dump of the database does not show their contents."""
    with contextlib.closing(psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                                             password=postgres.password, dbname=postgres.database)) as db:
        with db.cursor() as cursor:
            cursor.execute("SELECT snapshot_body FROM snapshots")
            bodies = [zlib.decompress(bytes(body)).decode() for (body,) in cursor.fetchall()]
    assert bodies
    return "\n".join(bodies)


@pytest.mark.slow
def test_postgres_storage_two_workers_and_a_redis_password_run_the_pipeline_without_leaking_a_password(
        tmp_path, monkeypatch):
    _require_servers()
    redis_password, postgres_password = f"redis-{secrets.token_hex(8)}", f"pg-{secrets.token_hex(8)}"
    dataset, logs = tmp_path / "dataset", tmp_path / "logs"
    logs.mkdir()
    outputs = [subprocess.run([str(BIN / "pipeline"), "generate", "--out", str(dataset), "--preset", "tiny",
                               "--train-files", str(len(DAYS)), "--test-files", "1", "--rows-per-file", "4000",
                               "--quiet"], check=True, capture_output=True, text=True)]
    with postgres_server(postgres_password) as postgres, redis_server(password=redis_password) as broker:
        connection = {"DAGSTER_PG_HOST": postgres.host, "DAGSTER_PG_PORT": str(postgres.port),
                      "DAGSTER_PG_USERNAME": postgres.user, "DAGSTER_PG_PASSWORD": postgres.password,
                      "DAGSTER_PG_DB": postgres.database}
        online_store = broker.url.removesuffix("/0") + "/1"
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user, password="wrong",
                             dbname=postgres.database)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=broker.port).ping()  # both servers require their password
        env = run_environment(tmp_path / "host", dataset, ROOT / "deploy/dagster-postgres.yaml", DAYS[0],
                              PIPELINE_EXECUTOR="celery", PIPELINE_CELERY_BROKER_URL=broker.url,
                              REDIS_URL=online_store, **connection)
        # the run host creates the storage before any worker starts (workers never create it)
        outputs.append(migrated := subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=env,
                                                  capture_output=True, text=True))
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        with celery_workers(env, ["worker-a", "worker-b"], logs) as workers:
            # the feature snapshots and the online store's load through its password, in one run
            outputs.append(launch(env, "--assets", "user_features,restaurant_features,online_features"))
            outputs.append(launch(env, "--job", "ingest_clicks", "--partition-range", f"{DAYS[0]}...{DAYS[-1]}"))
            outputs.append(launch(env, "--job", "train_model"))
            assert all(process.poll() is None for process in workers.values())
        for name, value in connection.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            runs = instance.get_runs()
            assert len(runs) == 3 and all(run.is_success for run in runs), [run.status for run in runs]
            workers_used = {record.event_log_entry.dagster_event.event_specific_data.metadata["Celery worker"]
                            .value.split("@")[0] for run in runs for record in instance.get_records_for_run(
                                run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
                            if "in celery worker" in record.event_log_entry.message}
        assert workers_used and workers_used <= {"worker-a", "worker-b"}
        client = redis.Redis.from_url(online_store)
        assert client.dbsize() > 0  # the online store was loaded through the password
        client.close()

        # everything the test can read that the runs, workers and servers wrote
        dump = postgres.dump()
        assert all(run.run_id in dump for run in runs)  # the runs and their events
        assert all(f"{worker}@" in dump for worker in workers_used)
        texts = {"postgres database (pg_dump)": dump, "dagster snapshots": _snapshots(postgres),
                 "postgres server log": postgres.log.read_text(),
                 "broker and result backend": _redis_contents(broker.url),
                 "process outputs": "\n".join(output if isinstance(output, str) else output.stdout + output.stderr
                                              for output in outputs)}
    files = [path for path in tmp_path.rglob("*") if path.is_file()]  # logs, DAGSTER_HOME, warehouse, online
    assert any(path.is_relative_to(tmp_path / "host/home") for path in files)
    assert len(list(logs.glob("*.log"))) == 2
    for password in (redis_password, postgres_password):
        leaked = [name for name, text in texts.items() if password in text]
        leaked += [str(path) for path in files if password.encode() in path.read_bytes()]
        assert not leaked, (password, leaked)
