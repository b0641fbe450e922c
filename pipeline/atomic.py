"""Write-then-rename helpers, so a killed process never leaves a partial file or directory visible.

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


def _temp_sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it over ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; on success publish it as ``path`` (replacing an old one).

    A reader sees either the old complete directory, no directory for an instant while an old one
    is swapped out, or the new complete directory; never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temp_sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        old = _temp_sibling(path, "old")
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(path: Path) -> None:
    """Delete what a killed writer of ``path`` left behind (its hidden temp siblings)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    for stale in path.parent.glob(f".{path.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def file_version(path: str | os.PathLike) -> str:
    """A stamp that changes whenever ``path`` is rewritten: inode, size and mtime in ns. Every
    publish above renames a new file into place (a new inode), and a late copy carrying an old
    mtime still changes it."""
    stat = Path(path).stat()
    return f"{stat.st_ino}.{stat.st_size}.{stat.st_mtime_ns}"
