"""``pipeline serve``: the API on uvicorn, configured like the pipeline (same settings)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import uvicorn

from pipeline.api.app import create_app
from pipeline.api.artifacts import Artifacts
from pipeline.config import setting
from pipeline.data.layout import Warehouse
from pipeline.store.factory import open_store


def build_app(poll_interval_s: float = 1.0):
    warehouse = Warehouse(Path(setting("PIPELINE_WAREHOUSE_DIR")).resolve())
    store = open_store(setting("PIPELINE_ONLINE_STORE"), setting("REDIS_URL"),
                       str(Path(setting("PIPELINE_SQLITE_PATH")).resolve()))
    return create_app(Artifacts(warehouse, store, poll_interval_s))


def serve(host: str, port: int, poll_interval_s: float = 1.0) -> None:
    # One request at a time per process, ~1 ms of CPU each: one torch thread is fastest here.
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(build_app(poll_interval_s), host=host, port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")
