"""Labeled impressions: every restaurant shown, with whether it was clicked.

The impressions of day D (one row per answer) are exploded to one row per shown restaurant and
joined to the click events on (request_id, restaurant_id); shown and not clicked is a negative. A
click is attributed to the day its request was served: D's impressions take the click events of
D and of D+1 (a click just after midnight), once published. Counted, not joined:

- ``unknown_request_clicks``: clicks of day D whose request id is in neither D's nor D-1's impressions;
- ``clicks_not_shown``: clicks naming a request of D and a restaurant that answer did not show;
- ``repeated_clicks``: click events beyond the first for the same (request, restaurant).

Published at ``WAREHOUSE/labeled_impressions/date=D``: ``labeled.parquet`` (:data:`COLUMNS`) and
``training_clicks.parquet``, the same rows in the reference click format (user_id, restaurant_id,
click as int64), which ``raw_clicks`` adds to the day's extract so the model learns from what
users were shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.audits import AuditResult
from pipeline.publish import Published, write_audit_publish

LABELED, TRAINING = "labeled.parquet", "training_clicks.parquet"
ROWS_CHECK = "one_row_per_shown_restaurant"
CLICKS_CHECK = "clicks_joined"
TRAINING_SCHEMA = pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()), ("click", pa.int64())])
RequestIds: TypeAlias = pa.Array | pa.ChunkedArray | None
LABELED_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("served_at", pa.timestamp("us", tz="UTC")), ("user_id", pa.int64()),
    ("model_version", pa.string()), ("model_format", pa.string()), ("store_version", pa.int64()),
    ("geo_version", pa.string()), ("rank", pa.int32()), ("restaurant_id", pa.int64()), ("score", pa.float32()),
    ("displacement", pa.float32()), ("propensity", pa.float32()), ("explored", pa.bool_()), ("clicked", pa.bool_())])
COLUMNS = ("request_id", "served_at", "user_id", "model_version", "model_format", "store_version", "geo_version",
           "rank", "restaurant_id", "score", "displacement", "propensity", "explored", "clicked")


@dataclass(frozen=True)
class Clicks:
    """A day's click events as the join needs them."""

    pairs: pl.DataFrame        # distinct clicked (request_id, restaurant_id) of day D and D+1, clicked = true
    day_pairs: pl.DataFrame    # those of day D's events
    events: int                # clicked events of day D
    repeated: int              # day D's clicked events beyond the first per pair

    @classmethod
    def of(cls, day_events: pa.Table, next_day_events: pa.Table | None = None) -> Clicks:
        day_pairs, repeated = _clicked_pairs([day_events])
        pairs, _ = _clicked_pairs([day_events] + ([next_day_events] if next_day_events is not None else []))
        return cls(pairs.with_columns(pl.lit(True).alias("clicked")), day_pairs,
                   int(day_events.column("clicked").to_numpy(zero_copy_only=False).sum()), repeated)

    def unknown(self, known_request_ids: pl.Series) -> int:
        """Day D's clicked pairs naming none of ``known_request_ids``."""
        return len(self.day_pairs.filter(~pl.col("request_id").is_in(known_request_ids.implode())))


@dataclass
class Labeled:
    rows: pl.DataFrame | None     # the labeled rows (None when streamed to a file)
    shown: int = 0                # restaurants shown that day (rows expected)
    click_events: int = 0         # clicked events of day D
    clicks: int = 0               # (request, restaurant) pairs joined as clicks
    unknown_request_clicks: int = 0
    clicks_not_shown: int = 0
    repeated_clicks: int = 0
    training_rows: int = 0        # rows at the training ranks

    def training_clicks(self, ranks: int = 0) -> pa.Table:
        """The rows shown at ranks ≤ ``ranks`` (0: every rank) in the reference click format."""
        assert self.rows is not None, "streamed: read the published training clicks"
        return training_clicks(self.rows, ranks)


def training_clicks(rows: pl.DataFrame, ranks: int = 0) -> pa.Table:
    """Labeled rows shown at ranks ≤ ``ranks`` (0: every rank) in the reference click format."""
    kept = rows.filter(pl.col("rank") <= ranks) if ranks else rows
    return kept.select("user_id", "restaurant_id", pl.col("clicked").cast(pl.Int64).alias("click")
                       ).to_arrow().cast(TRAINING_SCHEMA)


def _clicked_pairs(events: list[pa.Table]) -> tuple[pl.DataFrame, int]:
    """Distinct clicked (request_id, restaurant_id) pairs, and how many events repeated one."""
    frames = [pl.from_arrow(e) for e in events if e.num_rows]
    if not frames:
        return pl.DataFrame(schema={"request_id": pl.String, "restaurant_id": pl.Int64}), 0
    clicked = pl.concat([f for f in frames if isinstance(f, pl.DataFrame)]).filter(pl.col("clicked"))
    pairs = clicked.select("request_id", "restaurant_id").unique()
    return pairs, len(clicked) - len(pairs)


def label_batch(impressions: pa.Table, clicks: Clicks) -> tuple[pl.DataFrame, int]:
    """Some of day D's impressions joined to the day's clicks: (labeled rows, clicks of day D
    naming these requests and a restaurant they did not show)."""
    frame = pl.from_arrow(impressions)
    assert isinstance(frame, pl.DataFrame)
    shown = frame.select(
        "request_id", "served_at", "user_id", "model_version", "model_format", "store_version", "geo_version",
        pl.int_ranges(1, pl.col("restaurant_ids").list.len() + 1, dtype=pl.Int32).alias("rank"),
        pl.col("restaurant_ids").alias("restaurant_id"), pl.col("scores").alias("score"),
        pl.col("displacements").alias("displacement"), pl.col("propensities").alias("propensity"),
        "explored_slot",
    ).explode("rank", "restaurant_id", "score", "displacement", "propensity").drop_nulls("restaurant_id")
    rows = shown.join(clicks.pairs, on=["request_id", "restaurant_id"], how="left").with_columns(
        pl.col("clicked").fill_null(False),
        (pl.col("rank") == pl.col("explored_slot")).fill_null(False).alias("explored"),
    ).select(COLUMNS).sort("served_at", "request_id", "rank")
    of_these = clicks.day_pairs.filter(pl.col("request_id").is_in(frame.get_column("request_id").implode()))
    not_shown = of_these.join(shown.select("request_id", "restaurant_id"), on=["request_id", "restaurant_id"],
                              how="anti")
    return rows, len(not_shown)


def label(impressions: pa.Table, day_events: pa.Table, next_day_events: pa.Table | None = None,
          previous_request_ids: RequestIds = None) -> Labeled:
    """Day D's impressions joined to its clicks, in memory (see the module docstring)."""
    clicks = Clicks.of(day_events, next_day_events)
    rows, not_shown = label_batch(impressions, clicks)
    known = pl.Series(impressions.column("request_id").to_pylist() + (
        previous_request_ids.to_pylist() if previous_request_ids is not None else []), dtype=pl.String)
    return Labeled(rows, len(rows), clicks.events, int(rows.get_column("clicked").sum()), clicks.unknown(known),
                   not_shown, clicks.repeated, len(rows))


def audits(staging: Path, labeled: Labeled, ranks: int = 0) -> list[AuditResult]:
    rows = pq.read_metadata(staging / LABELED).num_rows
    training = pq.read_metadata(staging / TRAINING).num_rows
    clicks = int(pc.sum(pq.read_table(staging / LABELED, columns=["clicked"]).column("clicked").cast(pa.int64())
                        ).as_py() or 0)
    expected = labeled.training_rows
    return [
        AuditResult(ROWS_CHECK, rows == labeled.shown and training == expected,
                    {"rows": rows, "training_rows": training, "shown": labeled.shown, "training_ranks": ranks},
                    "" if rows == labeled.shown and training == expected else
                    f"{rows} labeled rows for {labeled.shown} restaurants shown, {training} training rows for "
                    f"{expected} shown at ranks ≤ {ranks or 'any'}"),
        AuditResult(CLICKS_CHECK, clicks == labeled.clicks, {"clicks": clicks, "joined": labeled.clicks},
                    "" if clicks == labeled.clicks else f"{clicks} clicks written, {labeled.clicks} joined"),
    ]


BATCH_ROWS = 50_000  # answers labeled at a time: ~1-2M labeled rows in memory at the reference's sizes


def label_into(impressions_file: Path, clicks: Clicks, previous_request_ids: RequestIds, staging: Path,
               ranks: int = 0) -> Labeled:
    """Label the day's impressions ``BATCH_ROWS`` answers at a time into ``staging``'s labeled rows
    and training clicks (rows shown at ranks ≤ ``ranks``; 0: all)."""
    ids = pq.read_table(impressions_file, columns=["request_id"]).column("request_id")
    known = pl.Series(ids.to_pylist() + (previous_request_ids.to_pylist() if previous_request_ids is not None
                                         else []), dtype=pl.String)
    labeled = Labeled(None, click_events=clicks.events, unknown_request_clicks=clicks.unknown(known),
                      repeated_clicks=clicks.repeated)
    rows_out = pq.ParquetWriter(staging / LABELED, LABELED_SCHEMA, compression="zstd", write_page_checksum=True)
    training_out = pq.ParquetWriter(staging / TRAINING, TRAINING_SCHEMA, write_page_checksum=True)
    with rows_out, training_out:
        for batch in pq.ParquetFile(impressions_file).iter_batches(batch_size=BATCH_ROWS):
            rows, not_shown = label_batch(pa.Table.from_batches([batch]), clicks)
            training = training_clicks(rows, ranks)
            rows_out.write_table(rows.to_arrow().cast(LABELED_SCHEMA))
            training_out.write_table(training)
            labeled.shown += len(rows)
            labeled.clicks += int(rows.get_column("clicked").sum())
            labeled.clicks_not_shown += not_shown
            labeled.training_rows += training.num_rows
    return labeled


def publish(impressions_file: Path, clicks: Clicks, previous_request_ids: RequestIds, day: str, target: Path,
            sources: dict, on_wait=None, ranks: int = 0) -> Published:
    """Label the day (:func:`label_into`) into a candidate of ``target`` and publish it."""
    return write_audit_publish(
        target, lambda staging: label_into(impressions_file, clicks, previous_request_ids, staging, ranks),
        lambda staging, written: audits(staging, written, ranks), on_wait=on_wait, record=lambda labeled: {
            "day": day, "rows": labeled.shown, "clicks": labeled.clicks, "training_ranks": ranks,
            "training_rows": labeled.training_rows, "click_events": labeled.click_events,
            "unknown_request_clicks": labeled.unknown_request_clicks, "clicks_not_shown": labeled.clicks_not_shown,
            "repeated_clicks": labeled.repeated_clicks, "sources": sources})


def read(published_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(published_dir / LABELED)


def scan(published_dir: Path) -> pl.LazyFrame:
    """The labeled rows, lazily (aggregations over them stream)."""
    return pl.scan_parquet(published_dir / LABELED)
