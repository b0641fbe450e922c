"""The documented multi-machine setup (docs/OPERATIONS.md, "Running on more machines") run for real on one
machine: Dagster's storage in a real PostgreSQL (deploy/dagster-postgres.yaml, the connection from the
environment), two real Celery workers, the broker and the online store on a redis-server that requires a
password. A backfill, a training run and the online store's load succeed, and neither password appears in
any output, log, file, the broker's keys or the whole Postgres database."""

import secrets
import subprocess

import dagster as dg
import pytest
import redis
import yaml

from devtools.celery_workers import celery_workers
from devtools.dagster_runs import BIN, ROOT, launch, run_environment
from devtools.postgres_server import postgres_server
from devtools.redis_server import redis_server

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]


def test_the_postgres_instance_settings_are_deploy_dagster_yaml_with_storage_from_the_environment():
    postgres = yaml.safe_load((ROOT / "deploy/dagster-postgres.yaml").read_text())
    local = yaml.safe_load((ROOT / "deploy/dagster.yaml").read_text())
    storage = postgres.pop("storage")
    assert postgres == local
    connection = storage["postgres"]["postgres_db"]
    assert connection.pop("scheme") == "postgresql+psycopg2"  # the locked driver, not SQLAlchemy's default
    assert all(isinstance(value, dict) and set(value) == {"env"} for value in connection.values())


def _redis_contents(url: str) -> str:
    """Every key and value of the Redis database at ``url``, as text."""
    client = redis.Redis.from_url(url)
    read = {"string": client.get, "list": lambda key: client.lrange(key, 0, -1), "hash": client.hgetall,
            "set": client.smembers, "zset": lambda key: client.zrange(key, 0, -1)}
    try:
        return "\n".join(f"{key!r} {read.get(client.type(key).decode(), lambda _: b'')(key)!r}"
                         for key in client.scan_iter())
    finally:
        client.close()


@pytest.mark.slow
def test_postgres_storage_two_workers_and_a_redis_password_run_the_pipeline_without_leaking_a_password(
        tmp_path, monkeypatch):
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
        env = run_environment(tmp_path / "host", dataset, ROOT / "deploy/dagster-postgres.yaml", DAYS[0],
                              PIPELINE_EXECUTOR="celery", PIPELINE_CELERY_BROKER_URL=broker.url,
                              REDIS_URL=online_store, **connection)
        # the run host creates the storage before any worker starts (workers never create it)
        outputs.append(migrated := subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=env,
                                                  capture_output=True, text=True))
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        with celery_workers(env, ["worker-a", "worker-b"], logs) as workers:
            outputs.append(launch(env, "--job", "feature_snapshots"))
            outputs.append(launch(env, "--job", "ingest_clicks", "--partition-range", f"{DAYS[0]}...{DAYS[-1]}"))
            outputs.append(launch(env, "--job", "train_model"))
            outputs.append(launch(env, "--assets", "online_features"))
            assert all(process.poll() is None for process in workers.values())
        for name, value in connection.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            runs = instance.get_runs()
            assert len(runs) == 4 and all(run.is_success for run in runs), [run.status for run in runs]
            workers_used = {record.event_log_entry.dagster_event.event_specific_data.metadata["Celery worker"]
                            .value.split("@")[0] for run in runs for record in instance.get_records_for_run(
                                run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
                            if "in celery worker" in record.event_log_entry.message}
        assert workers_used and workers_used <= {"worker-a", "worker-b"}
        client = redis.Redis.from_url(online_store)
        assert client.dbsize() > 0  # the online store was loaded through the password
        client.close()

        # everything the test can read that the runs, workers and servers wrote
        texts = {"postgres database (pg_dump)": postgres.dump(), "postgres server log": postgres.log.read_text(),
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
