"""The ``pipeline`` code location: every definition under ``pipeline/defs``.

``dg dev``, ``dg check defs`` and ``dg launch`` find it through ``[tool.dg]`` in pyproject.toml;
``dagster job execute -m pipeline.definitions`` loads the same object.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
