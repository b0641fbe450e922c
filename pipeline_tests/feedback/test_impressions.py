"""A day of the impression log collected: a truncated or corrupted segment rejected by name and the
rest published; repeated request ids kept once; a late segment picked up by publishing again."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from pipeline.feedback import impressions
from pipeline.feedback.log_writer import ImpressionLog
from pipeline.publish import Artifact
from pipeline_devtools.damage import flip_byte
from pipeline_tests.feedback.test_log_writer import impression

DAY = "2026-12-06"


def _segment(log_dir, numbers) -> None:
    log = ImpressionLog(log_dir, flush_s=60)
    for n in numbers:
        log.add(impression(n))
    log.flush()


def test_a_damaged_segment_is_rejected_by_name_and_the_rest_of_the_day_published(tmp_path):
    log_dir = tmp_path / "log"
    for numbers in (range(0, 10), range(10, 20), range(20, 30), range(30, 40)):
        _segment(log_dir, numbers)
    paths = sorted((log_dir / f"date={DAY}").glob("seg-*.parquet"),
                   key=lambda p: int(pq.read_table(p).column("user_id")[0].as_py()))  # in the order written
    truncated, corrupted = paths[1], paths[2]
    os.truncate(truncated, truncated.stat().st_size // 2)
    flip_byte(corrupted, 60)  # inside the first column chunk's pages
    collected, published = impressions.publish(log_dir, DAY, tmp_path / "impressions" / f"date={DAY}")
    assert set(collected.rejected) == {truncated.name, corrupted.name}
    assert sorted(collected.segments) == sorted([paths[0].name, paths[3].name])
    table = impressions.read(published.path)
    assert sorted(table.column("request_id").to_pylist()) == sorted(
        f"r-{n}" for n in [*range(0, 10), *range(30, 40)])
    audit = impressions.segment_audit(collected)
    assert not audit.passed and truncated.name in audit.description and corrupted.name in audit.description
    assert published.record["rejected_segments"].keys() == {truncated.name, corrupted.name}


def test_repeated_request_ids_are_kept_once_the_first_served(tmp_path):
    log_dir = tmp_path / "log"
    _segment(log_dir, range(5))
    _segment(log_dir, [2, 3, 9])  # the same ids again (a caller resending them)
    collected, published = impressions.publish(log_dir, DAY, tmp_path / "out")
    assert collected.duplicates == 2 and collected.segment_rows == 8
    assert sorted(impressions.read(published.path).column("request_id").to_pylist()) == [
        "r-0", "r-1", "r-2", "r-3", "r-4", "r-9"]
    assert all(a.passed for a in published.audits)


def test_a_late_segment_is_taken_when_the_day_is_published_again(tmp_path):
    log_dir, target = tmp_path / "log", tmp_path / "out"
    _segment(log_dir, range(3))
    first = impressions.publish(log_dir, DAY, target)[1]
    _segment(log_dir, range(3, 5))
    second = impressions.publish(log_dir, DAY, target)[1]
    assert (first.record["requests"], second.record["requests"]) == (3, 5)
    assert Artifact(target).live_version() == second.version and len(second.record["segments"]) == 2


def test_a_day_without_traffic_publishes_an_empty_table(tmp_path):
    collected, published = impressions.publish(tmp_path / "log", DAY, tmp_path / "out")
    assert collected.requests == 0 and pq.read_metadata(published.path / impressions.FILE).num_rows == 0
