"""A published processed click partition read: the live version, its manifest, its chunks.

Every file is read from one version directory (resolved once), so the manifest and the chunks never
come from two versions; each chunk is checked against its published size and crc32 before it is read
(the format: :mod:`pipeline.data.clicks`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.arrow_ipc import read_first_batch
from pipeline.data.clicks import MANIFEST
from pipeline.integrity import RECORD, verify_file
from pipeline.publish import Artifact


def live_partition(partition: Path) -> Path:
    """The live version directory of a published processed partition (read every file from it)."""
    try:
        return Artifact(partition).live()
    except FileNotFoundError:
        raise FileNotFoundError(f"no processed partition at {partition} (materialize processed_clicks)") from None


def _version_dir(partition: Path) -> Path:
    """A version directory as given, or the live version of a published partition (resolved once)."""
    partition = Path(partition)
    if partition.is_symlink() or not partition.exists():
        return live_partition(partition)
    if not (partition / RECORD).exists():
        raise FileNotFoundError(f"{partition} was written before versioned publishing (no {RECORD}): "
                                f"re-materialize processed_clicks for that day")
    return partition


def read_manifest(partition: Path) -> dict:
    """The manifest of the live version of ``partition`` (or of a version directory)."""
    return json.loads((_version_dir(partition) / MANIFEST).read_text())


def iter_chunks(partition: Path, verify: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (user_row, restaurant_row, click) numpy arrays chunk by chunk (memory-mapped) from
    one version of ``partition``; each chunk is checked against its published crc32 first."""
    directory = _version_dir(partition)
    record = json.loads((directory / RECORD).read_text())
    for chunk in json.loads((directory / MANIFEST).read_text())["chunks"]:
        yield _read_chunk(directory, chunk["file"], record, verify)


def read_chunk(partition: Path, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunk ``index`` of one version of ``partition``, as :func:`iter_chunks` yields it."""
    directory = _version_dir(partition)
    chunks = json.loads((directory / MANIFEST).read_text())["chunks"]
    if not 0 <= index < len(chunks):
        raise IndexError(f"{directory} has {len(chunks)} chunks, not a chunk {index}")
    return _read_chunk(directory, chunks[index]["file"], json.loads((directory / RECORD).read_text()), True)


def _read_chunk(directory: Path, file: str, record: dict, verify: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch = read_first_batch(verify_file(directory, file, record) if verify else directory / file)
    return tuple(batch.column(i).to_numpy() for i in range(3))
