"""The code location's settings: parsed once when the definitions load (in every process that loads
them, a step's included), read by the modules of ``pipeline/defs`` as values; a set variable becomes
a Dagster ``EnvVar`` where a resource is built. The process-wide values (the free-space reserve,
the native step's mode and build directory) are handed over here (:mod:`pipeline.runtime`)."""

from __future__ import annotations

import os

import dagster as dg

from pipeline import runtime
from pipeline.release.mlflow_mirror import bound_http
from pipeline.settings import Settings, load_settings
from pipeline.settings.fields import spec_of

SETTINGS: Settings = load_settings()
runtime.configure(SETTINGS)
if SETTINGS.release.mlflow_tracking_uri:  # MLflow reads only its own variables: bound its HTTP calls
    bound_http(os.environ)


def resource_value(group: type, name: str) -> str | dg.EnvVar:
    """A resource field's value for setting ``name`` of ``group``: an ``EnvVar`` when its variable is set
    (the UI shows where the value comes from, and a secret stays out of the run's stored
    configuration), else the default as text."""
    spec = spec_of(group, name)
    return dg.EnvVar(spec.variable) if os.environ.get(spec.variable) else spec.default_text()
