"""What an HTTP body may say: no credential (:func:`pipeline.redaction.redact`) and no absolute server path.

A path under the warehouse is named relative to it (``models/click_model/export``), as the pipeline's
docs name artifacts; any other absolute path is cut to its file name. The server log keeps the full
paths for the operator.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.redaction import redact

# the directories of an absolute path: a '/' not inside a word, a URL (scheme://host/...) or a relative path
_ABSOLUTE_DIRECTORIES = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+~-]+/)+")


def public_text(text: object, warehouse_root: Path | str | None = None) -> str:
    """``text`` with credentials masked, warehouse paths relative to the warehouse and other absolute
    paths reduced to their file name."""
    result = redact(text)
    if warehouse_root is not None:
        root = str(warehouse_root).rstrip("/")
        result = result.replace(root + "/", "").replace(root, ".")
    return _ABSOLUTE_DIRECTORIES.sub("", result)


def public_value(value: Any, warehouse_root: Path | str | None = None) -> Any:
    """A JSON-like value with :func:`public_text` applied to every string in it (keys kept)."""
    if isinstance(value, str):
        return public_text(value, warehouse_root)
    if isinstance(value, dict):
        return {key: public_value(item, warehouse_root) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [public_value(item, warehouse_root) for item in value]
    return value
