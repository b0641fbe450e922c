"""The Dagster code location: ``dagster dev`` / ``dagster job execute -m pipeline.definitions``."""

import dagster as dg

from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.checks import restaurant_features_are_finite, user_features_are_finite
from pipeline.defs.executor import executor_from_settings
from pipeline.defs.jobs import daily_clicks_schedule, feature_snapshots_job, ingest_clicks_job
from pipeline.defs.resources import default_resources

defs = dg.Definitions(
    assets=[user_features, restaurant_features, raw_clicks, processed_clicks],
    asset_checks=[user_features_are_finite, restaurant_features_are_finite],
    jobs=[feature_snapshots_job, ingest_clicks_job],
    schedules=[daily_clicks_schedule],
    resources=default_resources(),
    executor=executor_from_settings(),
)
