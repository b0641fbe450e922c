"""Where raw data comes from. Every source writes the same raw files, so the assets do not care.

A source offers the path of a reference-format feature file and the held-out test files (it may
extract them into a scratch directory first), and ``extract_clicks(day, out_dir)``, which writes the day's clicks as
``part-NNNNN.parquet`` files in ``out_dir`` (a staging directory the caller publishes atomically).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow.parquet as pq

from pipeline.atomic import file_version
from pipeline.data.clicks import open_click_file
from pipeline.data.features import FeatureKind
from pipeline.data.layout import ReferenceDataset


@dataclass(frozen=True)
class Extract:
    """What an extract wrote: files, rows, bytes, and where from (for lineage metadata)."""

    files: list[Path]
    rows: int
    bytes: int
    origin: str


class Source(Protocol):
    def feature_file(self, kind: FeatureKind, scratch_dir: Path) -> Path: ...

    def extract_clicks(self, day: str, out_dir: Path) -> Extract: ...

    def test_files(self, scratch_dir: Path) -> list[Path]: ...

    def requests_file(self, scratch_dir: Path) -> Path: ...

    def feature_version(self) -> str:
        """Changes whenever either feature table changes (the refresh sensor's cursor)."""

    def describe(self) -> str: ...


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (free, and immune to later in-place rewrites that replace the
    source file by rename); copy when the two paths are on different filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@dataclass(frozen=True)
class LocalParquetSource:
    """A reference-format directory on local disk, used as is."""

    dataset: ReferenceDataset

    def describe(self) -> str:
        return f"local parquet {self.dataset.root} (shard N = day {self.dataset.start_date} + N)"

    def feature_file(self, kind: FeatureKind, scratch_dir: Path) -> Path:
        path = self.dataset.user_features if kind.name == "users" else self.dataset.restaurant_features
        if not path.exists():
            raise FileNotFoundError(f"{kind.name} feature file not found: {path}")
        return path

    def requests_file(self, scratch_dir: Path) -> Path:
        if not self.dataset.requests.exists():
            raise FileNotFoundError(f"requests file not found: {self.dataset.requests}")
        return self.dataset.requests

    def feature_version(self) -> str:
        """File versions (inode, size, mtime in ns) of both feature files: any rewrite, including
        an atomic replacement or a late copy with an old mtime, changes it."""
        return "-".join(file_version(p) for p in (self.dataset.user_features, self.dataset.restaurant_features))

    def test_files(self, scratch_dir: Path) -> list[Path]:
        files = self.dataset.test_files()
        if not files:
            raise FileNotFoundError(f"no held-out files: expected {self.dataset.root / 'test' / 'test_NN.parquet'}")
        return files

    def extract_clicks(self, day: str, out_dir: Path) -> Extract:
        shard = self.dataset.shard_for_day(day)
        rows = open_click_file(shard).metadata.num_rows  # validates the schema before linking
        target = out_dir / "part-00000.parquet"
        link_or_copy(shard, target)
        return Extract([target], rows, target.stat().st_size, str(shard))


def raw_files(partition_dir: Path) -> list[Path]:
    """The part files of a published raw partition."""
    files = sorted(Path(partition_dir).glob("part-*.parquet"))
    if not files and not Path(partition_dir).is_dir():
        raise FileNotFoundError(f"raw partition not materialized: {partition_dir}")
    return files


def raw_rows(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
