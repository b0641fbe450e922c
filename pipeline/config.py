"""Embedded defaults, each overridable by an environment variable (see README: Configuration).

Dagster-free so the command line and the pure modules read the same settings as the pipeline.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PIPELINE_DATASET_DIR": "data/dataset",
    "PIPELINE_WAREHOUSE_DIR": "data/warehouse",
    "PIPELINE_START_DATE": "2026-01-01",
    "PIPELINE_EXECUTOR": "multiprocess",
    "PIPELINE_MAX_CONCURRENT": "2",
    "PIPELINE_SQLITE_PATH": "data/online/features.db",
    "PIPELINE_ONLINE_STORE": "",  # sqlite or redis; empty: redis when REDIS_URL is set, else sqlite
    "REDIS_URL": "",
}


def setting(name: str) -> str:
    """The value in force: the environment's, else the embedded default."""
    return os.environ.get(name) or DEFAULTS[name]
