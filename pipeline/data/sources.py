"""Where raw data comes from. Every source writes the same raw files, so the assets do not care.

A source offers the path of a reference-format feature file and the held-out test files (it may
extract them into a scratch directory first), and ``extract_clicks(day, out_dir)``, which writes the day's clicks as
``part-NNNNN.parquet`` files in ``out_dir`` (a staging directory the caller publishes atomically).
"""

from __future__ import annotations

import fcntl
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.atomic import file_version
from pipeline.audits import AuditResult
from pipeline.data.features import FeatureKind
from pipeline.data.layout import ReferenceDataset
from pipeline.data.raw_clicks import open_click_file
from pipeline.feedback import click_events
from pipeline.integrity import RECORD, crc32_of, verify_file
from pipeline.publish import Artifact, Published


@dataclass(frozen=True)
class Extract:
    """What an extract wrote: files, rows, bytes, and where from (for lineage metadata)."""

    files: list[Path]
    rows: int
    bytes: int
    origin: str
    metadata: dict = field(default_factory=dict)  # what the read cost (BigQuery: bytes, method)
    notes: list[str] = field(default_factory=list)  # what a reader of the metadata must know


class SourceConfigError(ValueError):
    """The source is not configured (a setting missing or invalid); the message names the setting."""


class TransientSourceError(Exception):
    """The source failed in a way worth retrying (5xx, throttling, a dropped connection)."""


class Source(Protocol):
    def feature_file(self, kind: FeatureKind, scratch_dir: Path) -> Path: ...

    def extract_clicks(self, day: str, out_dir: Path) -> Extract: ...

    def test_files(self, scratch_dir: Path) -> list[Path]: ...

    def requests_file(self, scratch_dir: Path) -> Path: ...

    def feature_version(self) -> str:
        """Changes whenever either feature table changes (the refresh sensor's cursor)."""

    def partition_version(self, day: str) -> str | None:
        """The version of the day's clicks, if the source can tell for free (None: it cannot, and a
        published day is kept until re-extraction is asked for)."""

    def has_day(self, day: str) -> bool: ...

    def click_event_files(self, day: str, scratch_dir: Path) -> list[Path]:
        """The click event files of ``day`` (:mod:`pipeline.feedback.click_events`); none is not an error."""

    def click_events_version(self, day: str) -> str | None:
        """A stamp of the day's click events if the source can tell for free (None: it cannot)."""

    def describe(self) -> str: ...


FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int), share the source's extents copy-on-write


def copy_owned(src: Path, dst: Path) -> str:
    """Copy ``src`` to a new file ``dst`` that shares no inode with it, so a later rewrite of
    ``src`` in place (truncate and write, as pandas and pyarrow do) cannot change ``dst``: a reflink
    where the file system shares extents copy-on-write (btrfs, XFS), else a copy in the kernel
    (``shutil.copyfile``: sendfile, no bytes through Python). Returns "reflink" or "copy"."""
    with open(src, "rb") as source, open(dst, "wb") as target:
        try:
            fcntl.ioctl(target.fileno(), FICLONE, source.fileno())
            return "reflink"
        except OSError:
            pass  # ext4, tmpfs, another file system: no shared extents
    shutil.copyfile(src, dst)
    return "copy"


def content_version(path: Path) -> str:
    """A stamp of ``path`` that changes with its content: :func:`file_version` (inode, size, mtime)
    and the crc32 of its bytes. The crc catches an in-place rewrite of the same size that the
    file system stamps with the same mtime (a coarse clock, or an mtime set back); it costs one
    read of the file (a 625,000-row shard: a few ms)."""
    return f"{file_version(path)}.{crc32_of(path)}"


@dataclass(frozen=True)
class LocalParquetSource:
    """A reference-format directory on local disk, used as is, and a directory of click events."""

    dataset: ReferenceDataset
    click_events_dir: Path | None = None

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

    def partition_version(self, day: str) -> str | None:
        """The shard's :func:`content_version`: a shard rewritten in place is a new version."""
        return content_version(self.dataset.shard_for_day(day))

    def has_day(self, day: str) -> bool:
        return self.dataset.shard_of_day(day) in self.dataset.train_shards()

    def click_event_files(self, day: str, scratch_dir: Path) -> list[Path]:
        return click_events.day_files(self.click_events_dir, day) if self.click_events_dir else []

    def click_events_version(self, day: str) -> str | None:
        """The day's click files' versions (inode, size, mtime)."""
        return ",".join(f"{p.name}:{file_version(p)}" for p in self.click_event_files(day, Path()))

    def test_files(self, scratch_dir: Path) -> list[Path]:
        files = self.dataset.test_files()
        if not files:
            raise FileNotFoundError(f"no held-out files: expected {self.dataset.root / 'test' / 'test_NN.parquet'}")
        return files

    def extract_clicks(self, day: str, out_dir: Path) -> Extract:
        shard = self.dataset.shard_for_day(day)
        rows = open_click_file(shard).metadata.num_rows  # validates the schema before copying
        target = out_dir / "part-00000.parquet"
        how = copy_owned(shard, target)
        return Extract([target], rows, target.stat().st_size, str(shard), {"copied_by": how})


RAW_CHECK = "raw_files_readable"


def raw_audits(extract: Extract) -> list[AuditResult]:
    """An extract must be readable click parquet holding the rows the source said it wrote."""
    rows = 0
    for path in extract.files:
        with open_click_file(path) as reader:
            rows += reader.metadata.num_rows
    return [AuditResult(RAW_CHECK, rows == extract.rows, {"rows": rows, "files": len(extract.files)},
                        "" if rows == extract.rows else f"files hold {rows} rows, the source wrote {extract.rows}")]


def kept_raw_partition(source_version: str | None, artifact: Artifact,
                       labeled: LabeledClicks | None = None) -> tuple[Extract, Published] | None:
    """The published extract of ``day`` when neither the source's version of it nor the labeled
    impressions added to it changed since (a source that cannot tell for free, BigQuery, reports
    None: its published days are kept)."""
    try:
        published = artifact.current()
    except FileNotFoundError:
        return None
    if published.record.get("source_version") != source_version or \
            published.record.get("labeled_version") != (labeled.version if labeled else None):
        return None
    files = [published.path / name for name in sorted(published.record["files"]) if name.startswith("part-")]
    return Extract(files, published.record["rows"], published.bytes, published.record["origin"]), published


@dataclass(frozen=True)
class LabeledClicks:
    """The training clicks of a day's labeled impressions (:mod:`pipeline.feedback.labels`): a
    published file in the reference click format and its artifact version."""

    path: Path
    version: str


LABELED_PART = "part-labeled.parquet"


def _with_labeled(source: Source, day: str, staging: Path, labeled: LabeledClicks | None) -> Extract:
    """The source's extract of ``day`` plus the labeled impressions' training clicks as one more
    part; without the source's day (a day only served, not in the reference data) the latter alone."""
    if labeled is not None and not source.has_day(day):
        extract = Extract([], 0, 0, "")
    else:
        extract = source.extract_clicks(day, staging)
    if labeled is None:
        return extract
    part = staging / LABELED_PART
    copy_owned(labeled.path, part)
    rows = open_click_file(part).metadata.num_rows
    origin = " + ".join(o for o in (extract.origin, f"labeled impressions {labeled.version}") if o)
    return Extract([*extract.files, part], extract.rows + rows, extract.bytes + part.stat().st_size, origin,
                   {**extract.metadata, "labeled_rows": rows}, extract.notes)


def publish_raw_partition(source: Source, day: str, target: Path, on_wait=None, reextract: bool = False,
                          labeled: LabeledClicks | None = None) -> tuple[Extract, Published, bool]:
    """Extract ``day`` from ``source`` (with ``labeled``, the day's labeled impressions as training
    clicks too) into a candidate of the raw partition ``target``, audit it, and publish it (each
    file's crc32 is recorded, and checked again when it is processed). A day already published
    from the same source version and labeled impressions is kept, not extracted again, unless
    ``reextract``. Returns (extract, published, whether it was extracted now)."""
    artifact = Artifact(target)
    with artifact.lock(on_wait=on_wait):  # decided under the lock: of two runs at once, one extracts
        version = source.partition_version(day) if labeled is None or source.has_day(day) else None
        if not reextract and (kept := kept_raw_partition(version, artifact, labeled)):
            return (*kept, False)
        published = artifact.write_audit_publish_locked(
            lambda staging: _with_labeled(source, day, staging, labeled),
            lambda staging, extract: raw_audits(extract),
            record=lambda extract: {"day": day, "rows": extract.rows, "origin": extract.origin,
                                    "source_version": version, "labeled_version": labeled.version if labeled else None,
                                    "extract": extract.metadata})
    return published.written, published, True


def raw_files(partition: Path) -> list[Path]:
    """The part files of the live version of a published raw partition, each checked against
    the crc32 recorded when it was published."""
    try:
        directory = Artifact(partition).live()
    except FileNotFoundError:
        raise FileNotFoundError(f"raw partition not materialized: {partition}") from None
    record = json.loads((directory / RECORD).read_text())
    return [verify_file(directory, name, record) for name in sorted(record["files"])
            if name.startswith("part-") and name.endswith(".parquet")]
