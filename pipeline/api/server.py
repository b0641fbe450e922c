"""``pipeline serve``: the API on uvicorn, configured like the pipeline (same settings).

``serve`` takes the settings the command line parsed (bad ones were refused before anything
started). With ``--workers
N`` uvicorn starts N processes sharing the listening socket; the parsed settings travel to each
inside uvicorn's configuration (:class:`_ServerConfig`, pickled into every worker), whose app
factory is ``build_app`` bound to them; each worker watches the artifacts and opens its own store
connections. Their metrics are one set: ``serve`` gives the workers a private
``PROMETHEUS_MULTIPROC_DIR`` for the server's life (prometheus-client's multiprocess mode, which
reads that variable when it is imported in each worker), so whichever worker answers ``/metrics``
reports all of them.

``build_app()`` without settings parses them from the environment: the factory for another ASGI
server (``granian --factory pipeline.api.server:build_app``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from pipeline.api.app import create_app
from pipeline.api.artifacts import Artifacts
from pipeline.api.limits import ApiLimits
from pipeline.api.protocol import BoundedHttpProtocol
from pipeline.data.layout import Warehouse
from pipeline.feedback.log_writer import ImpressionLog
from pipeline.redaction import install_log_redaction
from pipeline.serving.telemetry import disable_onnxruntime_telemetry
from pipeline.settings import Settings, load_settings
from pipeline.store.factory import open_store

LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def build_app(settings: Settings | None = None):
    """The app of one server process, from ``settings`` (default: parsed from the environment)."""
    settings = load_settings() if settings is None else settings
    disable_onnxruntime_telemetry()  # a worker started by another server than `pipeline serve` too
    logging.basicConfig(format=LOG_FORMAT)
    logging.getLogger().setLevel(logging.INFO)
    for logger in (None, "uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's loggers have their own handlers
        install_log_redaction(logging.getLogger(logger))
    limits, store_settings = ApiLimits.from_settings(settings.api), settings.store
    warehouse = Warehouse(Path(settings.paths.warehouse_dir).resolve())
    store = open_store(store_settings.backend, store_settings.redis_url,
                       str(Path(store_settings.sqlite_path).resolve()), timeout_s=limits.store_timeout_s,
                       redis_ca_file=store_settings.redis_ca_file)
    feedback = settings.feedback
    impression_log = ImpressionLog(feedback.log_dir(warehouse.root), feedback.flush_s, feedback.flush_records,
                                   feedback.queue_records) if feedback.logging else None
    artifacts = Artifacts(warehouse, store, settings.api.poll_interval_s, settings.api.model_format,
                          feedback.exploration_epsilon, settings.release)
    return create_app(artifacts, limits, api_token=settings.api.token, impression_log=impression_log)


class _ServerConfig(uvicorn.Config):
    """uvicorn's configuration carrying the parsed settings: it is pickled into every worker, where
    the app factory is ``build_app`` bound to them (the import string satisfies uvicorn's check
    that workers can import the app)."""

    def __init__(self, settings: Settings, **options):
        super().__init__("pipeline.api.server:build_app", factory=True, **options)
        self.settings = settings

    def load_app(self):
        return functools.partial(build_app, self.settings)


METRICS_DIR_PREFIX = "pipeline-api-metrics-"


def _fresh_metrics_dir() -> str:
    """A new private directory for the workers' metrics; those left by servers that were killed
    (their pid no longer runs) are removed first."""
    for old in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*-*"):
        pid = old.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")


def serve(settings: Settings, host: str, port: int, workers: int = 1, poll_interval_s: float | None = None) -> None:
    """Serve until stopped; ``poll_interval_s`` overrides ``PIPELINE_API_POLL_INTERVAL_S``."""
    if poll_interval_s is not None:
        settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, poll_interval_s=poll_interval_s))
    limits = ApiLimits.from_settings(settings.api)
    metrics_dir = _fresh_metrics_dir() if workers > 1 else None
    if metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # prometheus-client's own variable, read by the workers
    print(f"Serving on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}; API docs at "
          f"http://{host}:{port}/docs, health at /health, metrics at /metrics)", flush=True)
    try:
        config = _ServerConfig(settings, host=host, port=port, workers=workers, log_level="warning",
                               access_log=False, loop="uvloop",
                               http=functools.partial(BoundedHttpProtocol, limits=limits),
                               timeout_keep_alive=math.ceil(limits.keepalive_s),
                               timeout_graceful_shutdown=math.ceil(limits.graceful_s))
        if workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server = uvicorn.Server(config)
            server.run()
            if not server.started:  # as uvicorn.run: a server that could not start is a failure
                raise SystemExit(STARTUP_FAILURE)
    except KeyboardInterrupt:
        pass
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
