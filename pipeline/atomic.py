"""Write-then-rename for single private files (the generator's output, the training run's state),
so a killed process never leaves a partial file visible, and a power cut never leaves an empty
one: the file is fsynced before the rename and its directory after. A full disk raises
:class:`pipeline.disk_space.DiskFull` naming the file; nothing of the write is left behind.
Anything a later run or the API reads is published through :mod:`pipeline.publish` instead
(versions, audits, a pointer).

Temporary names start with a dot and sit beside their target (same filesystem, so ``rename`` is
atomic); readers that list ``name=*`` or ``*.parquet`` never see them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline.disk_space import naming_disk_full


def _temp_sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it, rename it over ``path`` and fsync the
    directory; on error delete it (a full disk: :class:`~pipeline.disk_space.DiskFull` naming ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path, "tmp")
    try:
        with naming_disk_full(path):
            yield tmp
            fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to the device."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename, a new file) to the device."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(path: Path) -> int:
    """Delete what a killed writer of ``path`` left behind (its hidden temp siblings); call it
    only as the single writer of ``path``. Returns how many were removed."""
    removed = 0
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed += 1
    return removed


def file_version(path: str | os.PathLike) -> str:
    """A stamp that changes whenever ``path`` is rewritten: inode, size and mtime in ns. Every
    publish above renames a new file into place (a new inode), and a late copy carrying an old
    mtime still changes it."""
    stat = Path(path).stat()
    return f"{stat.st_ino}.{stat.st_size}.{stat.st_mtime_ns}"
