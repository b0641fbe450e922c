"""The feature-refresh sensor: one run per new version of the feature source."""

import dagster as dg

from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.serving import online_features, restaurant_geo_index, scoring_benchmark
from pipeline.defs.resources import SourceResource

refresh_features_job = dg.define_asset_job(
    "refresh_features",
    selection=dg.AssetSelection.assets(user_features, restaurant_features, restaurant_geo_index,
                                       online_features, scoring_benchmark),
    description="Feature snapshots → geo index → online store → scoring benchmark.",
)


@dg.sensor(job=refresh_features_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING)
def feature_source_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
    """Requests a refresh for every new version of the feature tables (file versions for local
    parquet). The cursor is the last version seen, not a time, so late files are not missed, and
    the run key is the version, so no version is ever refreshed twice."""
    try:
        version = source.feature_version()
    except FileNotFoundError as missing:
        return dg.SkipReason(f"feature source not available: {missing}")
    if version == context.cursor:
        return dg.SkipReason(f"feature source unchanged (version {version})")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"features-{version}")], cursor=version)
