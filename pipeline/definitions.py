"""The Dagster code location: ``dagster dev`` / ``dagster job execute -m pipeline.definitions``."""

import dagster as dg

from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.model import click_model, torchscript_model
from pipeline.defs.assets.serving import online_features, restaurant_geo_index, scoring_benchmark
from pipeline.defs.executor import executor_from_settings
from pipeline.defs.jobs import (
    daily_clicks_schedule,
    feature_snapshots_job,
    ingest_clicks_job,
    train_model_job,
    train_model_schedule,
)
from pipeline.defs.resources import default_resources
from pipeline.defs.sensors import feature_source_sensor, refresh_features_job

defs = dg.Definitions(
    assets=[user_features, restaurant_features, raw_clicks, processed_clicks,
            click_model, torchscript_model,
            restaurant_geo_index, online_features, scoring_benchmark],
    jobs=[feature_snapshots_job, ingest_clicks_job, train_model_job, refresh_features_job],
    schedules=[daily_clicks_schedule, train_model_schedule],
    sensors=[feature_source_sensor],
    resources=default_resources(),
    executor=executor_from_settings(),
)
