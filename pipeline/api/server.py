"""``pipeline serve``: the API on uvicorn, configured like the pipeline (same settings).

With ``--workers N`` uvicorn starts N processes sharing the listening socket; each builds its
own app from the settings (``build_app`` is the factory), watches the artifacts and opens its
own store connections.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import uvicorn

from pipeline.api.app import create_app
from pipeline.api.artifacts import Artifacts
from pipeline.api.limits import ApiLimits, HeaderTimeoutProtocol
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


def serve(host: str, port: int, workers: int = 1, poll_interval_s: float | None = None) -> None:
    if poll_interval_s is not None:
        os.environ["PIPELINE_API_POLL_INTERVAL_S"] = str(poll_interval_s)  # read by every worker
    ApiLimits.from_settings()  # refuse bad settings before starting anything
    print(f"Serving on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}; API docs at "
          f"http://{host}:{port}/docs, health at /health, metrics at /metrics)", flush=True)
    uvicorn.run("pipeline.api.server:build_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, loop="uvloop", http=HeaderTimeoutProtocol,
                timeout_graceful_shutdown=5)
