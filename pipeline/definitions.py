"""The ``pipeline`` code location: every definition under ``pipeline/defs``.

``dg dev``, ``dg check defs`` and ``dg launch`` find it through ``[tool.dg]`` in pyproject.toml;
``dagster job execute -m pipeline.definitions`` loads the same object.

Every Dagster process that runs steps imports this module before any asset's code (the code
server, the run worker, each step process of the multiprocess, Celery and Kubernetes executors),
so it sets MKL's strict reproducibility here, before the process's first matrix product
(:mod:`pipeline.model.reproducible`), and turns ONNX Runtime's telemetry off before it loads
(:mod:`pipeline.serving.telemetry`); step processes started by this one also inherit both.
"""

from pathlib import Path

import dagster as dg

from pipeline.model.reproducible import enable_reproducible_blas
from pipeline.serving.telemetry import disable_onnxruntime_telemetry

enable_reproducible_blas()
disable_onnxruntime_telemetry()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
