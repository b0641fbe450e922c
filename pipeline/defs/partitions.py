"""Daily click partitions: partition ``start_date + N`` is click shard N of the dataset."""

import dagster as dg

from pipeline.defs.settings import setting

click_days = dg.DailyPartitionsDefinition(start_date=setting("PIPELINE_START_DATE"))
