"""The sensors: the feature-refresh sensor (observes the source's feature tables and refreshes on each
new version), the feedback sensor (a served day's log or clicks changed), the release judge's (a
challenger's canary has new traffic) and the one that evaluates the assets' automation conditions
(policies.py)."""

import datetime as dt
import hashlib
import json

import dagster as dg

from pipeline.data.sources import TransientSourceError
from pipeline.defs.assets.features import SOURCE_VERSION, feature_tables, restaurant_features, user_features
from pipeline.defs.assets.serving import online_features, restaurant_geo_index, scoring_benchmark
from pipeline.defs.jobs import IN_LOCATION, close_the_loop_job, release_model_job
from pipeline.defs.partitions import click_days
from pipeline.defs.resources import SourceResource, WarehouseResource
from pipeline.feedback.log_format import logged_days, segments
from pipeline.publish import Artifact
from pipeline.release.registry import Registry
from pipeline.release.switch import export_of

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


FEEDBACK_LOOKBACK_DAYS = 7
FEEDBACK_GRACE = dt.timedelta(minutes=10)


def _fingerprint(names: list[str]) -> str:
    return hashlib.blake2b("\n".join(names).encode(), digest_size=8).hexdigest()


def feedback_requests(log_days: dict[str, list[str]], click_versions: dict[str, str | None], cursor: dict,
                      now: dt.datetime, partition_keys: set[str]) -> tuple[list[dg.RunRequest], dict]:
    """Run requests for the finished days (ended more than ``FEEDBACK_GRACE`` ago, within the last
    ``FEEDBACK_LOOKBACK_DAYS``) whose log segments or click events' version differ from the
    cursor's, and the new cursor."""
    last = (now - FEEDBACK_GRACE).date() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=FEEDBACK_LOOKBACK_DAYS - 1)
    requests, seen = [], {}
    for day in sorted(set(log_days) | {d for d, v in click_versions.items() if v}):
        if not first.isoformat() <= day <= last.isoformat() or day not in partition_keys:
            continue
        seen[day] = _fingerprint(log_days.get(day, []) + ["--", click_versions.get(day) or ""])
        if cursor.get(day) != seen[day]:
            requests.append(dg.RunRequest(run_key=f"loop-{day}-{seen[day]}", partition_key=day))
    return requests, seen


@dg.sensor(target=close_the_loop_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description=("Every minute, lists the impression log's segments and the local click event files of the "
                        f"last {FEEDBACK_LOOKBACK_DAYS} finished days (a day is finished "
                        f"{FEEDBACK_GRACE.seconds // 60} minutes after it ends, UTC; BigQuery click events are not "
                        "looked at, that would be billed). A day whose files changed since its last run (a new day, a "
                        "late segment, late clicks) starts close_the_loop for it. Run key = the day and its files."))
def feedback_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource, source: SourceResource):
    """Requests close_the_loop for each finished day whose log or clicks changed."""
    log_dir = warehouse.impression_log()
    opened = source.open()
    days = logged_days(log_dir)[-FEEDBACK_LOOKBACK_DAYS - 1:]
    log_files = {day: [p.name for p in segments(log_dir, day)] for day in days}
    click_versions = {day: opened.click_events_version(day) for day in days}
    now = dt.datetime.now(dt.UTC)
    keys = set(click_days.get_partition_keys(current_time=now))
    requests, seen = feedback_requests(log_files, click_versions, json.loads(context.cursor or "{}"), now, keys)
    if not requests:
        return dg.SkipReason(f"no finished day's impression log or clicks changed (looked at {len(days)} days)")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen))


def _canary_state(log_dir, click_files, since_day: str, today: str) -> str:
    """A stamp of what the judge would read: the log's segment names and the click files' versions
    from ``since_day`` to ``today``."""
    day, names = dt.date.fromisoformat(since_day), []
    while day.isoformat() <= today:
        names += [p.name for p in segments(log_dir, day.isoformat())] + ["--", click_files(day.isoformat()) or ""]
        day += dt.timedelta(days=1)
    return _fingerprint(names)


@dg.sensor(target=release_model_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description=("Every minute while a challenger is out and exported: when the impression log or the local "
                        "click events grew since the judge last looked, starts release_model to judge the canary "
                        "(promote, retire or wait). Run key = the challenger and the files it would read."))
def release_judge_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource, source: SourceResource):
    """Requests the judge whenever a challenger's canary has new traffic or clicks."""
    layout = warehouse.layout()
    roles = Registry(layout.registry).roles()
    if roles.challenger is None:
        return dg.SkipReason("no challenger is out")
    if export_of(Artifact(layout.export), roles.challenger) is None:
        return dg.SkipReason(f"challenger {roles.challenger} is not exported yet (model_exports)")
    since = roles.latest[roles.challenger].at[:10]
    opened = source.open()
    stamp = _canary_state(warehouse.impression_log(), opened.click_events_version, since,
                          dt.datetime.now(dt.UTC).date().isoformat())
    key = f"judge-{roles.challenger}-{stamp}"
    if context.cursor == key:
        return dg.SkipReason(f"no new traffic or clicks for challenger {roles.challenger}")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=key)], cursor=key)
