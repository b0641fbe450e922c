"""What every machine that runs steps must share, checked before a worker takes any step.

A step runs wherever a worker picks it up, so each worker must see what the run that submitted it
sees: the warehouse (every artifact is read and published there), the raw data (the dataset
directory, or the BigQuery tables), the online store, and the broker the steps arrive through.
Dagster's own storage is the other shared part (``pipeline.worker`` checks it: it needs Dagster).

Paths must be absolute: a relative path resolves against each worker's working directory, so two
workers would write two different warehouses and neither would fail. Dagster-free.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import redis

from pipeline.redaction import redact
from pipeline.settings import Settings
from pipeline.store.factory import resolve_backend
from pipeline.store.redis_connection import client_options, display_url

SHARED_STORAGE = "a directory on storage every worker and the run host mount at the same path"


def _writable_directory(name: str, path: str) -> str | None:
    """None, or why ``path`` (the value of variable ``name``) cannot be the shared directory."""
    if not Path(path).is_absolute():
        return f"{name}={path!r} is relative: set it to {SHARED_STORAGE}"
    if not Path(path).is_dir():
        return f"{name}={path} does not exist on this machine: it must be {SHARED_STORAGE}"
    probe = Path(path) / f".worker-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{name}={path} is not writable by this worker: {exc.strerror}"
    return None


def redis_problem(what: str, url: str, timeout_s: float, ca_file: str = "") -> str | None:
    """None when the Redis server at ``url`` answers a PING within ``timeout_s``, connecting as the store
    and the broker do (AUTH from the URL, TLS verified with ``ca_file`` for ``rediss://``)."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                      **client_options(url, ca_file))
    except ValueError as exc:
        return f"{what}: {redact(exc)}"
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return redact(f"{what} {display_url(url)} does not answer: {type(exc).__name__}: {exc}")
    finally:
        client.close()
    return None


def problems(settings: Settings) -> list[str]:
    """Everything that keeps this machine from sharing the runs' state; empty when it can take steps."""
    timeout, store = settings.celery.timeout_s, settings.store
    found = [_writable_directory("PIPELINE_WAREHOUSE_DIR", settings.paths.warehouse_dir)]
    source = settings.source.kind
    if source == "local":
        dataset = settings.paths.dataset_dir
        if not Path(dataset).is_absolute():
            found.append(f"PIPELINE_DATASET_DIR={dataset!r} is relative: set it to {SHARED_STORAGE}")
        elif not (Path(dataset) / "train").is_dir():
            found.append(f"PIPELINE_DATASET_DIR={dataset} has no train/ directory on this machine: "
                         f"it must be {SHARED_STORAGE}")
    elif source == "bigquery":
        found += [f"{name} is not set: the workers read BigQuery with the runs' settings"
                  for name, value in (("PIPELINE_BIGQUERY_PROJECT", settings.bigquery.project),
                                      ("PIPELINE_BIGQUERY_DATASET", settings.bigquery.dataset)) if not value]
    try:
        backend = resolve_backend(store.backend, store.redis_url)
    except ValueError as exc:
        found.append(f"online store: {exc}")
    else:
        if backend == "redis":
            found.append(redis_problem("the online store (REDIS_URL)", store.redis_url, timeout, store.redis_ca_file))
        else:
            sqlite = store.sqlite_path
            found.append(_writable_directory("PIPELINE_SQLITE_PATH's directory", str(Path(sqlite).parent))
                         if Path(sqlite).is_absolute() else
                         f"PIPELINE_SQLITE_PATH={sqlite!r} is relative: the SQLite online store is a file every "
                         f"worker must reach at the same absolute path (or set REDIS_URL)")
    return [problem for problem in found if problem]
