"""ONNX Runtime's telemetry, off. Its official Linux builds collect usage events to upload to
Microsoft, and from the moment the library loads keep an offline cache and a device identifier in
``~/.cache/Microsoft/DeveloperTools`` and write a session file into ``$TMPDIR``. With
``ORT_DISABLE_TELEMETRY=1`` in the environment before it loads, none of that happens. The entry
points (the ``pipeline`` command, the API's app factory, the code location) set it first, so the
processes they start inherit it; an operator's own value wins."""

from __future__ import annotations

import os

VARIABLE = "ORT_DISABLE_TELEMETRY"


def disable_onnxruntime_telemetry() -> str:
    """Set ``ORT_DISABLE_TELEMETRY=1`` unless it is set; the value in effect."""
    return os.environ.setdefault(VARIABLE, "1")
