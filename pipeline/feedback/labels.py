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

A fixed share of requests (:data:`HELD_OUT_PERCENT`, chosen by a hash of the request id) is held out
of the training clicks and marked ``held_out``: the release evaluation re-ranks those logged lists
with the candidate and the champion (:mod:`pipeline.release.evaluation`), on rows neither trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audits import AuditResult
from pipeline.publish import Published, write_audit_publish

LABELED, TRAINING = "labeled.parquet", "training_clicks.parquet"
ROWS_CHECK = "one_row_per_shown_restaurant"
CLICKS_CHECK = "clicks_joined"
TRAINING_SCHEMA = pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()), ("click", pa.int64())])
RequestIds: TypeAlias = pa.Array | pa.ChunkedArray | None
COLUMNS = ("request_id", "served_at", "user_id", "model_version", "model_format", "store_version", "geo_version",
           "rank", "restaurant_id", "score", "displacement", "propensity", "explored", "clicked", "held_out",
           "shadow_version", "shadow_score")
HELD_OUT_PERCENT = 10  # of requests: never training clicks, the release evaluation's logged lists
_HELD_OUT_SEED = 27


@dataclass(frozen=True)
class Clicks:
    """A day's click events as the join needs them (lazy: built from files, they stream)."""

    pairs: pl.LazyFrame        # distinct clicked (request_id, restaurant_id) of day D and D+1, clicked = true
    day_pairs: pl.LazyFrame    # those of day D's events
    events: int                # clicked events of day D
    repeated: int              # day D's clicked events beyond the first per pair

    @classmethod
    def of(cls, day_events: pa.Table, next_day_events: pa.Table | None = None) -> Clicks:
        """From tables in memory."""
        frames = [pl.from_arrow(t) for t in (day_events, next_day_events) if t is not None]
        return cls._from([f.lazy() for f in frames if isinstance(f, pl.DataFrame)])

    @classmethod
    def scan(cls, day_file: Path, next_day_file: Path | None = None) -> Clicks:
        """From published click event files."""
        return cls._from([pl.scan_parquet(f) for f in (day_file, next_day_file) if f is not None])

    @classmethod
    def _from(cls, events: list[pl.LazyFrame]) -> Clicks:
        def clicked(frame: pl.LazyFrame) -> pl.LazyFrame:
            return frame.filter(pl.col("clicked")).select("request_id", pl.col("restaurant_id").cast(pl.Int64))

        day = clicked(events[0])
        counts = pl.concat([day.select(pl.len().alias("events")),
                            day.unique().select(pl.len().alias("pairs"))], how="horizontal").collect(engine="streaming")
        pairs = pl.concat([clicked(e) for e in events]).unique().with_columns(pl.lit(True).alias("clicked"))
        return cls(pairs, day.unique(), int(counts["events"][0]), int(counts["events"][0] - counts["pairs"][0]))


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
        """The rows shown at ranks ≤ ``ranks`` (0: every rank), not held out, in the reference click format."""
        assert self.rows is not None, "streamed: read the published training clicks"
        return _training(self.rows.lazy(), ranks).collect().to_arrow().cast(TRAINING_SCHEMA)


def _training(rows: pl.LazyFrame, ranks: int) -> pl.LazyFrame:
    """Labeled rows shown at ranks ≤ ``ranks`` (0: every rank), not held out, in the reference click format."""
    kept = rows.filter(~pl.col("held_out"))
    kept = kept.filter(pl.col("rank") <= ranks) if ranks else kept
    return kept.select("user_id", "restaurant_id", pl.col("clicked").cast(pl.Int64).alias("click"))


def _with_shadow(impressions: pl.LazyFrame) -> pl.LazyFrame:
    """The shadow columns as lists beside the shown list (NaN where the request had no shadow: a
    list of the shown list's length, so both explode together); impressions collected before the
    log had them get them null."""
    if "shadow_scores" not in impressions.collect_schema().names():
        impressions = impressions.with_columns(pl.lit(None, pl.String).alias("shadow_version"),
                                               pl.lit(None, pl.List(pl.Float32)).alias("shadow_scores"))
    return impressions.with_columns(pl.coalesce(
        pl.col("shadow_scores"), pl.col("scores").list.eval(pl.element() * float("nan"))).alias("shadow_scores"))


def _labeled(impressions: pl.LazyFrame, clicks: Clicks) -> pl.LazyFrame:
    """One row per restaurant shown, joined to the clicks (shown and not clicked: false), with the
    shadow model's score of it when the request was shadow-scored."""
    shown = _with_shadow(impressions).select(
        "request_id", "served_at", "user_id", "model_version", "model_format", "store_version", "geo_version",
        pl.int_ranges(1, pl.col("restaurant_ids").list.len() + 1, dtype=pl.Int32).alias("rank"),
        pl.col("restaurant_ids").alias("restaurant_id"), pl.col("scores").alias("score"),
        pl.col("displacements").alias("displacement"), pl.col("propensities").alias("propensity"),
        "explored_slot", "shadow_version", pl.col("shadow_scores").alias("shadow_score"),
    ).explode("rank", "restaurant_id", "score", "displacement", "propensity", "shadow_score") \
        .drop_nulls("restaurant_id").with_columns(pl.col("shadow_score").fill_nan(None))
    return shown.join(clicks.pairs, on=["request_id", "restaurant_id"], how="left").with_columns(
        pl.col("clicked").fill_null(False),
        (pl.col("rank") == pl.col("explored_slot")).fill_null(False).alias("explored"),
        held_out(pl.col("request_id")).alias("held_out"),
    ).select(COLUMNS)


def held_out(request_id: pl.Expr) -> pl.Expr:
    """Whether a request is held out of training: :data:`HELD_OUT_PERCENT` of request ids, by hash
    (decided once, when the day is labeled, and stored with its rows)."""
    return (request_id.hash(_HELD_OUT_SEED) % 100) < HELD_OUT_PERCENT


def _counts(impressions: pl.LazyFrame, labeled: pl.LazyFrame, clicks: Clicks, previous_request_ids: RequestIds
            ) -> tuple[int, int]:
    """(clicks of day D naming an unknown request, clicks of day D naming a request of D and a
    restaurant it did not show)."""
    today = impressions.select("request_id")
    previous = pl.DataFrame({"request_id": pl.Series(
        previous_request_ids.to_pylist() if previous_request_ids is not None else [], dtype=pl.String)}).lazy()
    known = pl.concat([today, previous])
    unknown = clicks.day_pairs.join(known, on="request_id", how="anti").select(pl.len())
    # a day-D click on a restaurant shown is a clicked labeled row: anti-join those (fewer than all rows)
    clicked = labeled.filter(pl.col("clicked")).select("request_id", "restaurant_id")
    not_shown = (clicks.day_pairs.join(today, on="request_id", how="semi")
                 .join(clicked, on=["request_id", "restaurant_id"], how="anti").select(pl.len()))
    both = pl.concat([unknown.rename({"len": "unknown"}), not_shown.rename({"len": "not_shown"})],
                     how="horizontal").collect(engine="streaming")
    return int(both["unknown"][0]), int(both["not_shown"][0])


def label(impressions: pa.Table, day_events: pa.Table, next_day_events: pa.Table | None = None,
          previous_request_ids: RequestIds = None) -> Labeled:
    """Day D's impressions joined to its clicks, in memory (see the module docstring)."""
    clicks = Clicks.of(day_events, next_day_events)
    frame = pl.from_arrow(impressions)
    assert isinstance(frame, pl.DataFrame)
    rows = _labeled(frame.lazy(), clicks).collect()
    unknown, not_shown = _counts(frame.lazy(), rows.lazy(), clicks, previous_request_ids)
    return Labeled(rows, len(rows), clicks.events, int(rows.get_column("clicked").sum()), unknown, not_shown,
                   clicks.repeated, len(rows))


def audits(staging: Path, labeled: Labeled, ranks: int = 0) -> list[AuditResult]:
    rows = pq.read_metadata(staging / LABELED).num_rows
    training = pq.read_metadata(staging / TRAINING).num_rows
    clicks = int(pl.scan_parquet(staging / LABELED).select(pl.col("clicked").cast(pl.Int64).sum())
                 .collect(engine="streaming").item() or 0)
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


def label_into(impressions_file: Path, clicks: Clicks, previous_request_ids: RequestIds, staging: Path,
               ranks: int = 0) -> Labeled:
    """Label the day's impressions into ``staging``'s labeled rows and training clicks (rows shown
    at ranks ≤ ``ranks``; 0: all), streamed by polars: memory holds the day's click pairs, not its
    impressions."""
    impressions = pl.scan_parquet(impressions_file)
    _labeled(impressions, clicks).sink_parquet(staging / LABELED, compression="zstd")
    written = pl.scan_parquet(staging / LABELED)
    _training(written, ranks).sink_parquet(staging / TRAINING)
    unknown, not_shown = _counts(impressions, written, clicks, previous_request_ids)
    joined = int(written.select(pl.col("clicked").cast(pl.Int64).sum()).collect(engine="streaming").item() or 0)
    return Labeled(None, pq.read_metadata(staging / LABELED).num_rows, clicks.events, joined, unknown, not_shown,
                   clicks.repeated, pq.read_metadata(staging / TRAINING).num_rows)


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


def scan(published_dir: Path) -> pl.LazyFrame:
    """The labeled rows, lazily (aggregations over them stream)."""
    return pl.scan_parquet(published_dir / LABELED)
