"""Settings as Dagster resource values."""

import os

import dagster as dg

from pipeline.config import DEFAULTS, setting

__all__ = ["resource_value", "setting"]


def resource_value(name: str) -> str | dg.EnvVar:
    """An ``EnvVar`` when the variable is set (so the UI shows where the value comes from), else
    the embedded default."""
    return dg.EnvVar(name) if os.environ.get(name) else DEFAULTS[name]
