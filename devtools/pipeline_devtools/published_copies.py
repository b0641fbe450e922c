"""Private copies of published artifacts, for a test to change or serve without touching the originals."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.data.layout import Warehouse
from pipeline.publish import Artifact


def copy_artifact(source: Path, target: Path) -> None:
    """Copy a published artifact (its versions and its pointer) to another place."""
    src, dst = Artifact(source), Artifact(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src.versions_dir, dst.versions_dir, symlinks=True)
    os.symlink(os.readlink(source), target)


def copy_warehouse(source: Warehouse, root: Path) -> Warehouse:
    """A private copy of published artifacts (versions and pointers)."""
    shutil.copytree(source.root, root, symlinks=True)
    return Warehouse(root)
