"""Celery workers for ``PIPELINE_EXECUTOR=celery``: the configuration the runs and the workers share,
and ``pipeline worker`` (``make worker``), which checks the shared state before it takes any step.

A run's orchestrating process submits each step to the broker; a worker process on any machine picks
it up and executes it against the Dagster instance the run uses (the run sends a reference to it), so
every worker needs the same broker, warehouse, raw data, online store and Dagster storage
(``pipeline.shared_state``; docs/OPERATIONS.md, "Running on more machines"). Needs the ``celery`` extra.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from pipeline import shared_state
from pipeline.redaction import install_log_redaction, redact
from pipeline.settings import Settings
from pipeline.store.redis_connection import celery_ssl_options

QUEUE = "dagster"  # dagster-celery's queue: a step tagged dagster-celery/queue goes elsewhere


def config_source(settings: Settings) -> dict[str, Any]:
    """Celery settings of both sides: every broker and result-backend call is bounded by
    ``PIPELINE_CELERY_TIMEOUT_S``; a ``rediss://`` broker or backend is verified against
    ``PIPELINE_REDIS_CA_FILE`` (its password comes from its URL)."""
    timeout_s = settings.celery.timeout_s
    return {**_tls_settings(settings),
        "worker_prefetch_multiplier": 1,  # a step is long: a worker must not hold steps another could run
        "task_default_queue": QUEUE,
        "task_default_priority": 5,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": timeout_s,
        "broker_transport_options": {"max_retries": 3, "interval_start": 0, "interval_step": 0.2,
                                     "interval_max": 0.5, "socket_timeout": timeout_s,
                                     "socket_connect_timeout": timeout_s},
        "redis_socket_timeout": timeout_s,
        "redis_socket_connect_timeout": timeout_s,
        "result_expires": 24 * 3600,  # step results are read within seconds; the backend keeps nothing longer
        "worker_redirect_stdouts_level": "INFO",  # a step's log lines are not warnings
    }


def _tls_settings(settings: Settings) -> dict[str, Any]:
    ca_file = settings.store.redis_ca_file
    broker = celery_ssl_options(settings.celery.broker_url, ca_file)
    backend = celery_ssl_options(settings.celery.result_backend_url, ca_file)
    return {**({"broker_use_ssl": broker} if broker else {}),
            **({"redis_backend_use_ssl": backend} if backend else {})}


def _backend_variable() -> str:
    """The variable holding the result backend's URL: its own when set, else the broker's."""
    return "PIPELINE_CELERY_BACKEND_URL" if os.environ.get("PIPELINE_CELERY_BACKEND_URL") \
        else "PIPELINE_CELERY_BROKER_URL"


def _url(name: str, value: str) -> str | dict:
    """A Dagster ``env`` source when variable ``name`` is set (a password in the URL stays out of the
    run's stored configuration), else ``value`` (the default)."""
    return {"env": name} if os.environ.get(name) else value


def executor_config(settings: Settings) -> dict[str, Any]:
    """The ``celery_executor``'s configuration from the settings (``PIPELINE_CELERY_*``)."""
    return {"broker": _url("PIPELINE_CELERY_BROKER_URL", settings.celery.broker_url),
            "backend": _url(_backend_variable(), settings.celery.result_backend_url),
            "config_source": config_source(settings)}


def celery_app(settings: Settings):
    """The Celery app a worker runs: dagster-celery's, with its step task, on the settings' broker."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    app = make_app(CeleryExecutor.for_cli(
        broker=settings.celery.broker_url, backend=settings.celery.result_backend_url,
        config_source=config_source(settings)).app_args())
    create_task(app)
    return app


def _missing_sqlite_storage(home: str) -> str | None:
    """A worker uses the storage of the runs' instance and never creates one: two processes creating a
    fresh SQLite storage at once corrupt it, and a fresh one means DAGSTER_HOME is not the runs'."""
    config = yaml.safe_load((Path(home) / "dagster.yaml").read_text()) if (Path(home) / "dagster.yaml").exists() \
        else None
    storage = (config or {}).get("storage")
    if (config or {}).get("run_storage") or (storage and "sqlite" not in storage):
        return None  # Postgres (or a legacy per-storage layout): opening it below tells whether it is there
    base = ((storage or {}).get("sqlite") or {}).get("base_dir", home)
    if isinstance(base, str) and not (Path(base) / "history" / "runs.db").exists():
        return (f"DAGSTER_HOME={home} has no Dagster storage yet ({base}/history/runs.db): a worker uses the "
                f"instance the runs use and does not create one; point DAGSTER_HOME at it, or create it on the "
                f"run host first (dagster instance migrate)")
    return None


def instance_problems() -> tuple[list[str], str]:
    """Problems with the Dagster instance this worker would use, and a description of its storage."""
    home = os.environ.get("DAGSTER_HOME", "")
    if not home or not os.path.isabs(home):
        return [f"DAGSTER_HOME={home!r} must be the absolute path of the Dagster instance the runs use "
                f"(its dagster.yaml names the shared storage)"], ""
    missing = _missing_sqlite_storage(home)
    if missing:
        return [missing], ""
    import dagster as dg

    try:
        with dg.DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
            storage = type(instance.run_storage).__name__
    except Exception as exc:  # any failure to open or query the storage is the message the operator needs
        return [f"the Dagster instance at DAGSTER_HOME={home} cannot be used: {exc}"], ""
    if "Sqlite" in storage:
        return [], (f"Dagster storage: SQLite under {home}: shared only by processes on this machine "
                    f"(use Postgres when workers run elsewhere)")
    return [], f"Dagster storage: {storage}"


def broker_problem(app, settings: Settings) -> str | None:
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=settings.celery.timeout_s)
    except Exception as exc:  # kombu raises the transport's own errors
        url = redact(settings.celery.broker_url)
        return redact(f"the broker PIPELINE_CELERY_BROKER_URL={url} does not answer: {type(exc).__name__}: {exc}")
    return None


def _redact_celery_logs() -> None:
    """Every handler Celery sets up for the worker's and the tasks' log lines masks credentials."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    def install(logger=None, **_):
        install_log_redaction(logger)
        install_log_redaction()

    after_setup_logger.connect(install, weak=False)
    after_setup_task_logger.connect(install, weak=False)
    install_log_redaction()


def start(settings: Settings, name: str | None = None, concurrency: int | None = None, loglevel: str = "INFO") -> int:
    """Check the shared state, then run a worker until it is stopped (SIGTERM: finish the steps in hand)."""
    try:
        app = celery_app(settings)
    except ImportError as exc:
        print(f"pipeline worker: needs the celery extra (pip install -e '.[celery]'): {exc}", file=sys.stderr)
        return 2
    found, storage = instance_problems()
    found += shared_state.problems(settings)
    if (broker := broker_problem(app, settings)) is not None:
        found.append(broker)
    found = [problem for problem in found if problem]
    if found:
        print(redact("pipeline worker: this machine cannot take steps:\n  - " + "\n  - ".join(found)),
              file=sys.stderr)
        return 2
    print(f"pipeline worker: warehouse {settings.paths.warehouse_dir}; {storage}; "
          f"broker {redact(settings.celery.broker_url)}", flush=True)
    _redact_celery_logs()
    concurrency = concurrency or settings.celery.worker_concurrency
    max_memory_kib = settings.celery.worker_max_memory_mib * 1024
    app.worker_main(["worker", f"--hostname={name or 'pipeline-' + uuid.uuid4().hex[:6]}@%h",
                     f"--concurrency={concurrency}", f"--queues={QUEUE}", f"--loglevel={loglevel}",
                     "--prefetch-multiplier=1", f"--max-memory-per-child={max_memory_kib}",
                     "--without-gossip", "--without-mingle"])
    return 0
