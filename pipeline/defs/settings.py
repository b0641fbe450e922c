"""Embedded defaults, each overridable by an environment variable (see README: Configuration)."""

from __future__ import annotations

import os

import dagster as dg

DEFAULTS = {
    "PIPELINE_DATASET_DIR": "data/dataset",
    "PIPELINE_WAREHOUSE_DIR": "data/warehouse",
    "PIPELINE_START_DATE": "2026-01-01",
    "PIPELINE_EXECUTOR": "multiprocess",
    "PIPELINE_MAX_CONCURRENT": "2",
}


def setting(name: str) -> str:
    """The value in force: the environment's, else the embedded default."""
    return os.environ.get(name) or DEFAULTS[name]


def resource_value(name: str) -> str | dg.EnvVar:
    """An ``EnvVar`` when the variable is set (so the UI shows where the value comes from), else
    the embedded default."""
    return dg.EnvVar(name) if os.environ.get(name) else DEFAULTS[name]
