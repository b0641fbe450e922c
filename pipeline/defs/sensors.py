"""The sensors: the feature-refresh sensor (observes the source's feature tables and refreshes on each
new version) and the one that evaluates the assets' automation conditions (policies.py)."""

import dagster as dg

from pipeline.data.sources import TransientSourceError
from pipeline.defs.assets.features import SOURCE_VERSION, feature_tables, restaurant_features, user_features
from pipeline.defs.assets.serving import online_features, restaurant_geo_index, scoring_benchmark
from pipeline.defs.jobs import IN_LOCATION
from pipeline.defs.resources import SourceResource

refresh_features_job = dg.define_asset_job(
    "refresh_features",
    selection=dg.AssetSelection.assets(user_features, restaurant_features, restaurant_geo_index,
                                       online_features, scoring_benchmark),
    run_tags=IN_LOCATION,
    description=("Feature snapshots → geo index → online store → scoring benchmark: what a new version of the "
                 "feature tables needs before the API serves it. Started by feature_source_sensor, or by hand."),
)


def _snapshots_version(instance: dg.DagsterInstance) -> set[str | None]:
    """The feature_tables versions the latest user and restaurant snapshots were made from (None
    for one not made, or made without a recorded version)."""
    versions: set[str | None] = set()
    for asset in (user_features, restaurant_features):
        event = instance.get_latest_materialization_event(asset.key)
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        versions.add(str(metadata[SOURCE_VERSION].value) if SOURCE_VERSION in metadata else None)
    return versions


@dg.sensor(target=refresh_features_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description=("Every minute, reads the version of the source's feature tables (file versions for local "
                        "parquet; modified time, row count and etag of the BigQuery tables). "
                        "A new version is recorded as an observation of feature_tables and starts "
                        "refresh_features, unless the live snapshots were already made from it (by make demo "
                        "or a run by hand). Run key = version: no version is refreshed twice."))
def feature_source_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
    """Observes feature_tables and requests refresh_features once per new version."""
    try:
        version = source.feature_version()
    except (FileNotFoundError, TransientSourceError) as unavailable:
        return dg.SkipReason(f"feature source not available: {unavailable}")
    if version == context.cursor:
        return dg.SkipReason(f"feature source unchanged (version {version})")
    observed = dg.AssetObservation(feature_tables.key, tags={"dagster/data_version": version},
                                   metadata={"version": version})
    if _snapshots_version(context.instance) == {version}:
        return dg.SensorResult(asset_events=[observed], cursor=version,
                               skip_reason=f"the live snapshots were already made from version {version}")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"features-{version}")], asset_events=[observed],
                           cursor=version)


automation_conditions_sensor = dg.AutomationConditionSensorDefinition(
    "automation_conditions_sensor", target=dg.AssetSelection.all(), minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Evaluates every asset's automation condition every 30 s (pipeline/defs/policies.py): processed "
                 "days follow raw ones, training at 03:00 UTC on new checked days, the export, geo index, online "
                 "features and scoring benchmark follow their parents."))
