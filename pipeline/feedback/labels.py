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

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audits import AuditResult
from pipeline.publish import Published, write_audit_publish

LABELED, TRAINING = "labeled.parquet", "training_clicks.parquet"
ROWS_CHECK = "one_row_per_shown_restaurant"
CLICKS_CHECK = "clicks_joined"
TRAINING_SCHEMA = pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()), ("click", pa.int64())])
COLUMNS = ("request_id", "served_at", "user_id", "model_version", "model_format", "store_version", "geo_version",
           "rank", "restaurant_id", "score", "displacement", "propensity", "explored", "clicked")


@dataclass(frozen=True)
class Labeled:
    rows: pl.DataFrame
    shown: int                    # restaurants shown that day (rows expected)
    click_events: int             # clicked events of day D
    clicks: int                   # (request, restaurant) pairs joined as clicks
    unknown_request_clicks: int
    clicks_not_shown: int
    repeated_clicks: int

    def training_rows(self, ranks: int = 0) -> pl.DataFrame:
        """The rows shown at ranks ≤ ``ranks`` (0: every rank)."""
        return self.rows.filter(pl.col("rank") <= ranks) if ranks else self.rows

    def training_clicks(self, ranks: int = 0) -> pa.Table:
        """The rows shown at ranks ≤ ``ranks`` (0: every rank) in the reference click format."""
        return self.training_rows(ranks).select("user_id", "restaurant_id",
                                                pl.col("clicked").cast(pl.Int64).alias("click")
                                                ).to_arrow().cast(TRAINING_SCHEMA)


def _clicked_pairs(events: list[pa.Table]) -> tuple[pl.DataFrame, int]:
    """Distinct clicked (request_id, restaurant_id) pairs, and how many events repeated one."""
    frames = [pl.from_arrow(e) for e in events if e.num_rows]
    if not frames:
        return pl.DataFrame(schema={"request_id": pl.String, "restaurant_id": pl.Int64}), 0
    clicked = pl.concat([f for f in frames if isinstance(f, pl.DataFrame)]).filter(pl.col("clicked"))
    pairs = clicked.select("request_id", "restaurant_id").unique()
    return pairs, len(clicked) - len(pairs)


def label(impressions: pa.Table, day_events: pa.Table, next_day_events: pa.Table | None = None,
          previous_request_ids: pa.Array | None = None) -> Labeled:
    """Day D's impressions joined to its clicks (see the module docstring)."""
    frame = pl.from_arrow(impressions)
    assert isinstance(frame, pl.DataFrame)
    shown = frame.select(
        "request_id", "served_at", "user_id", "model_version", "model_format", "store_version", "geo_version",
        pl.int_ranges(1, pl.col("restaurant_ids").list.len() + 1, dtype=pl.Int32).alias("rank"),
        pl.col("restaurant_ids").alias("restaurant_id"), pl.col("scores").alias("score"),
        pl.col("displacements").alias("displacement"), pl.col("propensities").alias("propensity"),
        "explored_slot",
    ).explode("rank", "restaurant_id", "score", "displacement", "propensity").drop_nulls("restaurant_id")
    day_pairs, repeated = _clicked_pairs([day_events])
    pairs, _ = _clicked_pairs([day_events] + ([next_day_events] if next_day_events is not None else []))
    clicks = pairs.with_columns(pl.lit(True).alias("clicked"))
    rows = shown.join(clicks, on=["request_id", "restaurant_id"], how="left").with_columns(
        pl.col("clicked").fill_null(False),
        (pl.col("rank") == pl.col("explored_slot")).fill_null(False).alias("explored"),
    ).select(COLUMNS).sort("served_at", "request_id", "rank")
    known = pl.Series(impressions.column("request_id").to_pylist() + (
        previous_request_ids.to_pylist() if previous_request_ids is not None else []), dtype=pl.String)
    this_day = frame.get_column("request_id")
    unknown = day_pairs.filter(~pl.col("request_id").is_in(known.implode()))
    of_this_day = day_pairs.filter(pl.col("request_id").is_in(this_day.implode()))
    not_shown = of_this_day.join(shown.select("request_id", "restaurant_id"), on=["request_id", "restaurant_id"],
                                 how="anti")
    return Labeled(rows, len(shown), int(day_events.column("clicked").to_numpy(zero_copy_only=False).sum()),
                   int(rows.get_column("clicked").sum()), len(unknown), len(not_shown), repeated)


def audits(staging: Path, labeled: Labeled, ranks: int = 0) -> list[AuditResult]:
    rows = pq.read_metadata(staging / LABELED).num_rows
    training = pq.read_metadata(staging / TRAINING).num_rows
    clicks = int(pq.read_table(staging / LABELED, columns=["clicked"]).column("clicked").to_numpy().sum())
    expected = len(labeled.training_rows(ranks))
    return [
        AuditResult(ROWS_CHECK, rows == labeled.shown and training == expected,
                    {"rows": rows, "training_rows": training, "shown": labeled.shown, "training_ranks": ranks},
                    "" if rows == labeled.shown and training == expected else
                    f"{rows} labeled rows for {labeled.shown} restaurants shown, {training} training rows for "
                    f"{expected} shown at ranks ≤ {ranks or 'any'}"),
        AuditResult(CLICKS_CHECK, clicks == labeled.clicks, {"clicks": clicks, "joined": labeled.clicks},
                    "" if clicks == labeled.clicks else f"{clicks} clicks written, {labeled.clicks} joined"),
    ]


def publish(labeled: Labeled, day: str, target: Path, sources: dict, on_wait=None, ranks: int = 0) -> Published:
    """Publish the labeled rows, and as training clicks those shown at ranks ≤ ``ranks`` (0: all)."""
    def write(staging: Path) -> Labeled:
        pq.write_table(labeled.rows.to_arrow(), staging / LABELED, compression="zstd", write_page_checksum=True)
        pq.write_table(labeled.training_clicks(ranks), staging / TRAINING, write_page_checksum=True)
        return labeled

    return write_audit_publish(target, write, lambda staging, written: audits(staging, written, ranks),
                               on_wait=on_wait, record={
        "day": day, "rows": labeled.shown, "clicks": labeled.clicks, "training_ranks": ranks,
        "training_rows": len(labeled.training_rows(ranks)), "click_events": labeled.click_events,
        "unknown_request_clicks": labeled.unknown_request_clicks, "clicks_not_shown": labeled.clicks_not_shown,
        "repeated_clicks": labeled.repeated_clicks, "sources": sources})


def read(published_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(published_dir / LABELED)
