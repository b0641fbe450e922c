"""Daily click partitions: partition ``start_date + N`` is click shard N of the dataset.

Where the partitions end is ``PIPELINE_END_DATE``:

- empty (the default): the last day the local dataset holds, so a demo's 16 days are exactly its
  partitions (none missing, and the UI's plots and backfill dialog open on days that exist), or
  the last day the API logged impressions on, if later: a served day is a partition too (its
  impressions, labels and training clicks), today's included while it is served (``make demo``
  closes it by hand; ``feedback_sensor`` waits until a day has ended). A new shard or a new served day shows up as a
  partition when the code location reloads. With ``PIPELINE_SOURCE=bigquery`` empty means
  ``open`` (loading definitions never queries BigQuery).
- ``open``: production, where a day arrives every day: partitions run to yesterday (UTC).
- ``YYYY-MM-DD``: the last partition, inclusive.

With no dataset on disk yet (a fresh clone before ``make demo``), the empty setting falls back to
one partition, the start day, rather than a year of days that can never exist.
"""

import datetime as dt
from pathlib import Path

import dagster as dg

from pipeline.data.layout import ReferenceDataset, parse_day
from pipeline.defs.settings import SETTINGS
from pipeline.feedback.log_format import logged_days
from pipeline.settings.groups import OPEN_ENDED


def last_click_day(start_date: str, end_setting: str, dataset_dir: str, source: str = "local",
                   last_served_day: str | None = None) -> dt.date | None:
    """The last daily partition (inclusive); ``None`` when partitions are open-ended."""
    if end_setting == OPEN_ENDED or (not end_setting and source != "local"):
        return None
    if end_setting:
        last = parse_day(end_setting)
        if last < parse_day(start_date):
            raise ValueError(f"PIPELINE_END_DATE={end_setting} is before PIPELINE_START_DATE={start_date}")
        return last
    dataset = ReferenceDataset(Path(dataset_dir).resolve(), parse_day(start_date))
    days = dataset.days() + ([last_served_day] if last_served_day and last_served_day >= start_date else [])
    return parse_day(max(days)) if days else dataset.start_date


def click_days_definition(start_date: str, end_setting: str, dataset_dir: str, source: str = "local",
                          last_served_day: str | None = None) -> dg.DailyPartitionsDefinition:
    last = last_click_day(start_date, end_setting, dataset_dir, source, last_served_day)
    end = (last + dt.timedelta(days=1)).isoformat() if last else None  # Dagster's end_date is exclusive
    # Dagster's partitions stop at the last finished day; a day being served is one too (end_offset=1)
    being_served = last is not None and last >= dt.datetime.now(dt.UTC).date()
    return dg.DailyPartitionsDefinition(start_date=start_date, end_date=end, end_offset=1 if being_served else 0)


_served = logged_days(SETTINGS.feedback.log_dir(SETTINGS.paths.warehouse_dir))
click_days = click_days_definition(SETTINGS.source.start_date, SETTINGS.source.end_date, SETTINGS.paths.dataset_dir,
                                   SETTINGS.source.kind, _served[-1] if _served else None)
