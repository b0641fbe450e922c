"""The assets that close the loop on a test instance: a served day's log and clicks through
impressions, click_events, labeled_impressions and online_metrics into raw_clicks and
processed_clicks; a damaged segment warned about by name; the feedback sensor's requests."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
import numpy as np
import polars as pl
import pytest

from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.feedback import click_events, impressions, labeled_impressions, online_metrics
from pipeline.defs.sensors import feedback_requests
from pipeline.feedback import click_events as clicks
from pipeline.feedback.log_format import Impression
from pipeline.feedback.log_writer import ImpressionLog
from pipeline_devtools.dagster_runs import local_resources, materialization_metadata

DAY = "2026-01-02"
AT = int(dt.datetime(2026, 1, 2, 9, tzinfo=dt.UTC).timestamp() * 1e9)
LOOP = [impressions, click_events, labeled_impressions, online_metrics]


def _serve_a_day(log_dir, click_dir, requests: int = 300, seed: int = 5) -> tuple[int, set, dict]:
    """Impressions of ``requests`` answers over the tiny dataset's ids in two segments, and clicks on
    some shown restaurants (and one for an unknown request); (restaurants shown, clicked pairs,
    each request's restaurant at rank 1)."""
    rng = np.random.default_rng(seed)
    log, shown, clicked, first = ImpressionLog(log_dir, flush_s=60), 0, set(), {}
    for n in range(requests):
        ids = rng.choice(2000, 10, replace=False).astype(np.int64)
        log.add(Impression(f"q-{n}", AT + n * 10**9, int(rng.integers(0, 5000)), "m1", "onnx", 2, "g1", 13.7, 100.5,
                           10, 5000.0, False, 1000, 10, ids, np.linspace(0.9, 0.1, 10, dtype=np.float32),
                           np.full(10, 800.0, np.float32), None, None))
        shown += 10
        first[f"q-{n}"] = int(ids[0])
        for rank in np.flatnonzero(rng.random(10) < 0.3 / np.arange(1, 11)):
            clicked.add((f"q-{n}", int(ids[rank])))
        if n == requests // 2:
            log.flush()
    log.flush()
    pairs = sorted(clicked)
    clicks.write(click_dir / f"date={DAY}" / "clicks-a.parquet", clicks.table(
        [r for r, _ in pairs] + ["nobody"], [i for _, i in pairs] + [1], [AT // 1000 + 5_000_000] * (len(pairs) + 1)))
    return shown, clicked, first


# one ephemeral job here holds raw_clicks (single-run backfills) and the feedback assets (none); the
# jobs users run keep them apart (close_the_loop, ingest_clicks)
@pytest.mark.filterwarnings("ignore:Asset job __ephemeral_asset_job__ materializes assets with varying")
def test_a_served_day_is_labeled_measured_and_becomes_training_clicks(tiny_dataset, tmp_path):
    warehouse = tmp_path / "warehouse"
    shown, clicked, first_shown = _serve_a_day(warehouse / "impression_log", tmp_path / "click_events")
    resources = local_resources(tiny_dataset, warehouse)
    with dg.instance_for_test() as instance:
        assert dg.materialize([user_features, restaurant_features, *LOOP, raw_clicks, processed_clicks],
                              partition_key=DAY, resources=resources, instance=instance).success
        labeled = materialization_metadata(instance, "labeled_impressions", DAY)
        metrics = materialization_metadata(instance, "online_metrics", DAY)
        raw = materialization_metadata(instance, "raw_clicks", DAY)
        processed = materialization_metadata(instance, "processed_clicks", DAY)
        seen = materialization_metadata(instance, "impressions", DAY)
    assert (seen["requests"], seen["segments"], seen["segments_rejected"]) == (300, 2, 0)
    assert (labeled["rows"], labeled["clicks"], labeled["unknown_request_clicks"]) == (shown, len(clicked), 1)
    assert metrics["clicks"] == len(clicked) and metrics["impressions"] == shown
    assert metrics["ctr_at_1"] > metrics["ctr_at_10"] > 0  # the clicks above favour the top ranks
    assert "ctr_by_rank" in metrics and metrics["ctr_at_5/m1"] == metrics["ctr_at_5"]
    # the day's extract: the reference shard (4,000 rows) and, as training clicks, the rows shown at
    # rank 1 (training_ranks' default): one per request not held out for the release evaluation
    rows = pl.read_parquet(warehouse / "labeled_impressions" / f"date={DAY}" / "labeled.parquet")
    held = set(rows.filter(pl.col("held_out"))["request_id"])
    trained = 300 - len(held)
    assert 0 < len(held) < 60
    assert raw["rows"] == 4_000 + trained and raw["labeled_rows"] == trained and processed["rows"] == 4_000 + trained
    training = pl.read_parquet(warehouse / "raw_clicks" / f"date={DAY}" / "part-labeled.parquet")
    assert int(training["click"].sum()) == sum(1 for request, restaurant in clicked
                                               if restaurant == first_shown[request] and request not in held)


def test_a_damaged_segment_is_a_warning_naming_it_and_the_rest_is_published(tiny_dataset, tmp_path):
    warehouse = tmp_path / "warehouse"
    _serve_a_day(warehouse / "impression_log", tmp_path / "click_events")
    damaged = sorted((warehouse / "impression_log" / f"date={DAY}").glob("seg-*.parquet"))[0]
    os.truncate(damaged, 100)
    with dg.instance_for_test() as instance:
        result = dg.materialize(LOOP, partition_key=DAY, resources=local_resources(tiny_dataset, warehouse),
                                instance=instance)
        assert result.success
        check = {e.check_name: e for e in result.get_asset_check_evaluations()}["segments_readable"]
        seen = materialization_metadata(instance, "impressions", DAY)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert damaged.name in check.description
    assert (seen["segments"], seen["segments_rejected"]) == (1, 1) and 0 < seen["requests"] < 300


def test_the_sensor_asks_for_finished_days_whose_files_changed_once():
    now = dt.datetime(2026, 12, 6, 0, 30, tzinfo=dt.UTC)
    keys = {"2026-12-04", "2026-12-05"}
    log = {"2026-12-04": ["seg-a"], "2026-12-05": ["seg-b"], "2026-12-06": ["seg-c"]}
    requests, cursor = feedback_requests(log, {}, {}, now, keys)
    assert [r.partition_key for r in requests] == ["2026-12-04", "2026-12-05"]  # today is not finished
    again, _ = feedback_requests(log, {}, cursor, now, keys)
    assert again == []
    late, _ = feedback_requests({**log, "2026-12-04": ["seg-a", "seg-late"]}, {"2026-12-05": "clicks-x:1.2.3"}, cursor,
                                now, keys)
    assert sorted(r.partition_key for r in late) == ["2026-12-04", "2026-12-05"]
    just_after_midnight, _ = feedback_requests(log, {}, {}, dt.datetime(2026, 12, 6, 0, 5, tzinfo=dt.UTC), keys)
    assert [r.partition_key for r in just_after_midnight] == ["2026-12-04"]  # within the grace period
