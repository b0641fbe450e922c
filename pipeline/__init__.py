"""Restaurant-recommendation pipeline.

Pure, Dagster-free logic lives in sub-packages (``pipeline.data`` …); the Dagster layer is
``pipeline.defs`` and the code location entry point is ``pipeline.definitions``.
"""
