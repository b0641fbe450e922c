"""The daily click partitions end where PIPELINE_END_DATE says: the dataset's last day by default."""

import datetime as dt

import pytest

from pipeline.defs.partitions import click_days_definition


def test_partitions_end_on_the_datasets_last_day(tiny_dataset, tmp_path):
    derived = click_days_definition("2026-01-01", "", str(tiny_dataset.root))
    assert derived.get_partition_keys() == tiny_dataset.days() == ["2026-01-01", "2026-01-02", "2026-01-03"]
    fixed = click_days_definition("2026-01-01", "2026-01-05", str(tiny_dataset.root))
    assert fixed.get_partition_keys()[-1] == "2026-01-05"
    now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert click_days_definition("2026-01-01", "open", "").get_partition_keys(current_time=now)[-1] == "2026-02-28"
    assert click_days_definition("2026-01-01", "", str(tmp_path / "nothing")).get_partition_keys() == ["2026-01-01"]
    bigquery = click_days_definition("2026-01-01", "", str(tiny_dataset.root), "bigquery")  # never queried to load
    assert bigquery.get_partition_keys(current_time=now)[-1] == "2026-02-28"
    with pytest.raises(ValueError, match="PIPELINE_END_DATE=2025-12-31 is before"):
        click_days_definition("2026-01-01", "2025-12-31", "")
