"""``pipeline serve``: the API on uvicorn, configured like the pipeline (same settings).

With ``--workers N`` uvicorn starts N processes sharing the listening socket; each builds its
own app from the settings (``build_app`` is the factory), watches the artifacts and opens its
own store connections. Their metrics are one set: ``serve`` gives the workers a private
``PROMETHEUS_MULTIPROC_DIR`` for the server's life (prometheus-client's multiprocess mode), so
whichever worker answers ``/metrics`` reports all of them.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
import uvicorn

from pipeline.api.app import create_app
from pipeline.api.artifacts import Artifacts
from pipeline.api.limits import ApiLimits
from pipeline.api.protocol import BoundedHttpProtocol
from pipeline.config import setting
from pipeline.data.layout import Warehouse
from pipeline.redaction import install_log_redaction
from pipeline.store.factory import open_store

LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def build_app():
    """The app of one server process, from the settings (uvicorn calls it in each worker)."""
    # One request at a time per thread, ~1 ms of CPU each: one torch thread is fastest here.
    torch.set_num_threads(1)
    logging.basicConfig(format=LOG_FORMAT)
    logging.getLogger().setLevel(logging.INFO)
    for logger in (None, "uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's loggers have their own handlers
        install_log_redaction(logging.getLogger(logger))
    limits = ApiLimits.from_settings()
    warehouse = Warehouse(Path(setting("PIPELINE_WAREHOUSE_DIR")).resolve())
    store = open_store(setting("PIPELINE_ONLINE_STORE"), setting("REDIS_URL"),
                       str(Path(setting("PIPELINE_SQLITE_PATH")).resolve()), timeout_s=limits.store_timeout_s,
                       redis_ca_file=setting("PIPELINE_REDIS_CA_FILE"))
    return create_app(Artifacts(warehouse, store, float(setting("PIPELINE_API_POLL_INTERVAL_S"))), limits,
                      api_token=setting("PIPELINE_API_TOKEN"))


METRICS_DIR_PREFIX = "pipeline-api-metrics-"


def _fresh_metrics_dir() -> str:
    """A new private directory for the workers' metrics; those left by servers that were killed
    (their pid no longer runs) are removed first."""
    for old in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*-*"):
        pid = old.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")


def serve(host: str, port: int, workers: int = 1, poll_interval_s: float | None = None) -> None:
    # the workers read these from the environment they are started with
    if poll_interval_s is not None:
        os.environ["PIPELINE_API_POLL_INTERVAL_S"] = str(poll_interval_s)
    limits = ApiLimits.from_settings()  # refuse bad settings before starting anything
    metrics_dir = _fresh_metrics_dir() if workers > 1 else None
    if metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    print(f"Serving on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}; API docs at "
          f"http://{host}:{port}/docs, health at /health, metrics at /metrics)", flush=True)
    try:
        uvicorn.run("pipeline.api.server:build_app", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", access_log=False, loop="uvloop", http=BoundedHttpProtocol,
                    timeout_keep_alive=math.ceil(limits.keepalive_s),
                    timeout_graceful_shutdown=math.ceil(limits.graceful_s))
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
