"""Jobs (what users launch) and the daily ingest schedule. Training is not scheduled here: click_model
trains at 03:00 by its automation condition, only when new checked days arrived (see policies.py)."""

import datetime as dt

import dagster as dg

from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.feedback import click_events, impressions, labeled_impressions, online_metrics
from pipeline.defs.assets.model import click_model, model_exports
from pipeline.defs.partitions import click_days
from pipeline.defs.policies import CLICKS_CRON
from pipeline.defs.resources import SourceResource

LOCATION_NAME = "pipeline"  # = [tool.dg.project] code_location_name (a test holds them equal)
# `dg launch` and `dagster job execute` run a job in their own process, so the run has no code location
# and the UI leaves it off its job's page and the timeline. Dagster files runs under a location by this
# tag (a run launched from the UI gets it from its origin): every run of these jobs carries it.
IN_LOCATION = {".dagster/repository": f"__repository__@{LOCATION_NAME}"}

feature_snapshots_job = dg.define_asset_job(
    "feature_snapshots",
    selection=dg.AssetSelection.assets(user_features, restaurant_features), run_tags=IN_LOCATION,
    description="Snapshot the user and restaurant feature tables; each is published only if its blocking checks pass.",
)

ingest_clicks_job = dg.define_asset_job(
    "ingest_clicks",
    selection=dg.AssetSelection.assets(raw_clicks, processed_clicks), run_tags=IN_LOCATION,
    description=("Extract and process one day of clicks, or a range in one run (`dg launch --job ingest_clicks "
                 "--partition-range A...B`); each day is published only if its blocking checks pass."),
)

train_model_job = dg.define_asset_job(
    "train_model",
    selection=dg.AssetSelection.assets(click_model, model_exports), run_tags=IN_LOCATION,
    description=("Update the click model (incremental by default), evaluate the candidate on held-out data, "
                 "publish it if it passes, export it and verify each export format."),
)


close_the_loop_job = dg.define_asset_job(
    "close_the_loop",
    selection=dg.AssetSelection.assets(impressions, click_events, labeled_impressions, online_metrics),
    run_tags=IN_LOCATION,
    description=("One served day: the impression log and the click events → labeled impressions → online metrics. "
                 "raw_clicks then takes the day's labels as training clicks (automation; by hand: ingest_clicks for "
                 "the day). Started by feedback_sensor when a finished day's log or clicks change, or by hand."),
)


release_model_job = dg.define_asset_job(
    "release_model", selection=dg.AssetSelection.assets("model_release"), run_tags=IN_LOCATION,
    description=("The canary's judge (promote, retire or wait on live traffic), or an operator's decision by run "
                 "config: promote, retire, rollback or challenge a model version, with a reason. Started by "
                 "release_judge_sensor while a challenger is out, or by hand."),
)


@dg.schedule(cron_schedule=CLICKS_CRON, target=ingest_clicks_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description=("At 01:00 UTC, ingest yesterday's clicks (raw_clicks and processed_clicks); skips, saying "
                          "why, while the day is outside the partitions or the source does not have it yet."))
def daily_clicks_schedule(context: dg.ScheduleEvaluationContext, source: SourceResource):
    """At 01:00 UTC, ingest yesterday's clicks; skip (and say why) while the source lacks the day."""
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    day = (scheduled.date() - dt.timedelta(days=1)).isoformat()
    if day not in click_days.get_partition_keys(current_time=scheduled):
        return dg.SkipReason(f"{day} is outside the click partitions")
    if not source.has_day(day):
        return dg.SkipReason(f"the source has no clicks for {day} yet")
    return dg.RunRequest(run_key=day, partition_key=day)

