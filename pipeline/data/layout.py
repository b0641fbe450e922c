"""Where files live: the reference dataset directory and the pipeline's warehouse.

Reference dataset (read as is)::

    DIR/user_features.parquet  DIR/restaurant_features.parquet  DIR/requests.parquet
    DIR/train/train_NN.parquet   shard NN holds the clicks of day start_date + NN
    DIR/test/test_NN.parquet     held-out clicks, not partitioned by day

Warehouse (written by the pipeline). Every artifact below is a directory published by
write-audit-publish (``pipeline.publish``): the name is a symlink to its live, audited version::

    WAREHOUSE/features/{users,restaurants}/snapshot.arrow      float32 feature snapshots
    WAREHOUSE/raw_clicks/date=YYYY-MM-DD/part-*.parquet
    WAREHOUSE/processed_clicks/date=YYYY-MM-DD/{_manifest.json,chunk-*.arrow}
    WAREHOUSE/models/click_model/checkpoint/{checkpoint.pt,evaluation.json}   the model of record
    WAREHOUSE/models/click_model/export/model.pt               the exported (served) model
    WAREHOUSE/serving/geo_index/{table.arrow,cells.arrow}      the H3 restaurant table and its lookup
    WAREHOUSE/impressions/date=YYYY-MM-DD/impressions.parquet  what the API served that day
    WAREHOUSE/click_events/date=YYYY-MM-DD/events.parquet      what users clicked that day
    WAREHOUSE/labeled_impressions/date=YYYY-MM-DD/{labeled,training_clicks}.parquet
    WAREHOUSE/online_metrics/date=YYYY-MM-DD/metrics.json      click rates per model version

and, not published (private to the one training writer): WAREHOUSE/models/click_model/training/run.pt,
the unfinished training run's state. The API's workers append segments to the impression log,
WAREHOUSE/impression_log/date=YYYY-MM-DD/seg-*.parquet (:mod:`pipeline.feedback.log_format`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

_SHARD_NAME = re.compile(r"^train_(\d+)\.parquet$")


def parse_day(day: str) -> dt.date:
    try:
        return dt.date.fromisoformat(day)
    except ValueError as exc:
        raise ValueError(f"not a day in YYYY-MM-DD form: {day!r}") from exc


@dataclass(frozen=True)
class ReferenceDataset:
    """A reference-format dataset directory; shard ``N`` is the click partition of ``start_date + N``."""

    root: Path
    start_date: dt.date

    @property
    def user_features(self) -> Path:
        return self.root / "user_features.parquet"

    @property
    def restaurant_features(self) -> Path:
        return self.root / "restaurant_features.parquet"

    @property
    def requests(self) -> Path:
        return self.root / "requests.parquet"

    def train_shards(self) -> dict[int, Path]:
        """Shard number → file, for every ``train/train_NN.parquet`` present."""
        shards = {}
        for path in (self.root / "train").glob("train_*.parquet"):
            match = _SHARD_NAME.match(path.name)
            if match:
                shards[int(match.group(1))] = path
        return dict(sorted(shards.items()))

    def test_files(self) -> list[Path]:
        return sorted((self.root / "test").glob("test_*.parquet"))

    def day_of_shard(self, shard: int) -> dt.date:
        return self.start_date + dt.timedelta(days=shard)

    def shard_of_day(self, day: str) -> int:
        return (parse_day(day) - self.start_date).days

    def shard_for_day(self, day: str) -> Path:
        """The train file of ``day``; a clear error when there is none."""
        shard = self.shard_of_day(day)
        if shard < 0:
            raise FileNotFoundError(
                f"day {day} is before the dataset's start_date {self.start_date.isoformat()}"
            )
        path = self.train_shards().get(shard)
        if path is None:
            raise FileNotFoundError(
                f"no click shard for day {day}: expected {self.root / 'train' / f'train_{shard:02d}.parquet'}"
                f" (shard N holds day start_date + N, start_date = {self.start_date.isoformat()})"
            )
        return path

    def days(self) -> list[str]:
        """The days that have a train shard, in order."""
        return [self.day_of_shard(n).isoformat() for n in self.train_shards()]


@dataclass(frozen=True)
class Warehouse:
    """Paths of everything the pipeline writes, under one root directory."""

    root: Path

    @property
    def user_features(self) -> Path:
        return self.root / "features" / "users"

    @property
    def restaurant_features(self) -> Path:
        return self.root / "features" / "restaurants"

    def features(self, kind: str) -> Path:
        """The snapshot artifact of ``kind`` (users or restaurants)."""
        return self.root / "features" / kind

    def raw_clicks(self, day: str) -> Path:
        return self.root / "raw_clicks" / f"date={parse_day(day).isoformat()}"

    def processed_clicks(self, day: str) -> Path:
        return self.root / "processed_clicks" / f"date={parse_day(day).isoformat()}"

    def impressions(self, day: str) -> Path:
        """The day's impression log, collected and deduplicated (artifact)."""
        return self.root / "impressions" / f"date={parse_day(day).isoformat()}"

    def click_events(self, day: str) -> Path:
        """The day's click events from the source (artifact)."""
        return self.root / "click_events" / f"date={parse_day(day).isoformat()}"

    def labeled_impressions(self, day: str) -> Path:
        """The day's impressions joined to their clicks, and the same as training clicks (artifact)."""
        return self.root / "labeled_impressions" / f"date={parse_day(day).isoformat()}"

    def online_metrics(self, day: str) -> Path:
        """The day's click rates per model version (artifact)."""
        return self.root / "online_metrics" / f"date={parse_day(day).isoformat()}"

    @property
    def models(self) -> Path:
        return self.root / "models" / "click_model"

    @property
    def checkpoint(self) -> Path:
        """The model of record (artifact): weights, optimizer, trained partitions, feature
        versions, and its evaluation on the held-out files."""
        return self.models / "checkpoint"

    @property
    def registry(self) -> Path:
        """Every decision about a model version's role: champion, challenger, retired, rejected (artifact)."""
        return self.models / "registry"

    @property
    def drift(self) -> Path:
        """The newest drift report: features and the challenger's scores against the reference (artifact)."""
        return self.models / "drift"

    @property
    def training_run(self) -> Path:
        """The unfinished training run's state (with its cursor), private to the training writer."""
        return self.models / "training" / "run.pt"

    @property
    def export(self) -> Path:
        """The exported model the API serves (artifact): ``model.pt``."""
        return self.models / "export"

    @property
    def torchscript(self) -> Path:
        """The live exported TorchScript file (through the export's pointer)."""
        return self.export / "model.pt"

    @property
    def geo_index(self) -> Path:
        """The H3 restaurant table and its cell lookup (one artifact)."""
        return self.root / "serving" / "geo_index"

    def processed_days(self) -> list[str]:
        """Days with a published processed partition, in order."""
        base = self.root / "processed_clicks"
        return sorted(p.name.removeprefix("date=") for p in base.glob("date=*") if p.is_dir())
