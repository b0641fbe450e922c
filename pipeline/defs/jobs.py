"""Jobs and the daily schedule."""

import datetime as dt

import dagster as dg

from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.model import click_model, torchscript_model
from pipeline.defs.partitions import click_days
from pipeline.defs.resources import SourceResource

feature_snapshots_job = dg.define_asset_job(
    "feature_snapshots",
    selection=dg.AssetSelection.assets(user_features, restaurant_features),
    description="Snapshot user and restaurant features (and run their blocking checks).",
)

ingest_clicks_job = dg.define_asset_job(
    "ingest_clicks",
    selection=dg.AssetSelection.assets(raw_clicks, processed_clicks),
    description="Extract and process one day (or a range of days) of clicks.",
)

train_model_job = dg.define_asset_job(
    "train_model",
    selection=dg.AssetSelection.assets(click_model, torchscript_model),
    description=("Update the click model (incremental by default), evaluate the candidate on held-out data, "
                 "publish it if it passes, export and verify TorchScript."),
)


@dg.schedule(cron_schedule="0 1 * * *", job=ingest_clicks_job, execution_timezone="UTC")
def daily_clicks_schedule(context: dg.ScheduleEvaluationContext, source: SourceResource):
    """At 01:00 UTC, ingest yesterday's clicks; skip (and say why) while the source lacks the day."""
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    day = (scheduled.date() - dt.timedelta(days=1)).isoformat()
    if day not in click_days.get_partition_keys(current_time=scheduled):
        return dg.SkipReason(f"{day} is outside the click partitions")
    if not source.has_day(day):
        return dg.SkipReason(f"the source has no clicks for {day} yet")
    return dg.RunRequest(run_key=day, partition_key=day)


# Two hours after the ingest: warm-start and train on the days ingested since the last run.
train_model_schedule = dg.ScheduleDefinition(
    name="train_model_schedule", job=train_model_job, cron_schedule="0 3 * * *",
    execution_timezone="UTC", description="Incremental training, evaluation and export, daily.")
