"""Closing the loop: what the API served, what users clicked, the two joined, and the click rates.

``impressions`` collects a day of the API's impression log, ``click_events`` the day's clicks
from the source, ``labeled_impressions`` joins them (shown and not clicked is a negative) and
writes them as training clicks, which ``raw_clicks`` adds to the day's extract, so the model
trains on what users were shown. ``online_metrics`` reports each model version's click rates.
Every day is an artifact published by write-audit-publish; an unreadable log segment or click
file is named by a warning check and the rest of the day is published. ``feedback_sensor``
(sensors.py) publishes a finished day again when a late segment or click file arrives.
"""

import datetime as dt
import json
import tempfile
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from pipeline.audits import AuditResult
from pipeline.data.layout import Warehouse
from pipeline.defs.charts import ctr_by_rank_svg, picture
from pipeline.defs.partitions import click_days
from pipeline.defs.policies import FOLLOWS_PARENTS_EVERY_DAY, OWNER
from pipeline.defs.publishing import check_results, check_specs, published_metadata, published_or_failed
from pipeline.defs.resources import SourceResource, WarehouseResource
from pipeline.feedback import click_events as clicks
from pipeline.feedback import impressions as log_days
from pipeline.feedback import labels
from pipeline.feedback.online_metrics import ALL, ctr_by_rank, ctr_drops, shadow_metrics
from pipeline.feedback.online_metrics import online_metrics as day_metrics
from pipeline.publish import Artifact, write_audit_publish

CTR_CHECK = "ctr_not_dropped"


def _warning(audit: AuditResult, asset: str | None = None) -> dg.AssetCheckResult:
    """A non-blocking check's result: a failure is a warning (the day was still published)."""
    (result,) = check_results([audit], asset, severity=dg.AssetCheckSeverity.WARN)
    return result


def _warning_spec(asset: str, name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, blocking=False, description=description)


def _live(path: Path) -> Path | None:
    """The live version's directory of an artifact, None when nothing is published."""
    try:
        return Artifact(path).live()
    except FileNotFoundError:
        return None


def _next_day(day: str, delta: int = 1) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=delta)).isoformat()


@dg.asset(partitions_def=click_days, group_name="feedback", kinds={"parquet"}, owners=[OWNER], code_version="1",
          check_specs=[*check_specs("impressions", {
              log_days.UNIQUE_CHECK: "every request id once",
              log_days.ROWS_CHECK: "rows = the readable segments' rows - repeated request ids"}),
              _warning_spec("impressions", log_days.SEGMENTS_CHECK,
                            "every segment of the day is readable (a damaged one is named, the rest published)")])
def impressions(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """The day's impression log as the API's workers published it: every segment read and checked
    (a truncated or corrupt one is rejected by name, the rest of the day published), one row per
    answered request id, in order of serving. Published again when a late segment arrives."""
    day = context.partition_key
    collected, published = yield from published_or_failed(lambda: log_days.publish(
        warehouse.impression_log(), day, warehouse.layout().impressions(day), on_wait=context.log.info))
    for name, why in collected.rejected.items():
        context.log.warning(f"impressions {day}: segment {name} rejected: {why}")
    yield dg.MaterializeResult(metadata={
        **published_metadata(published), "dagster/row_count": collected.requests, "requests": collected.requests,
        "restaurants_shown": collected.shown, "segments": len(collected.segments),
        "segments_rejected": len(collected.rejected), "duplicates": collected.duplicates,
        "model_versions": dg.MetadataValue.json(sorted(collected.models))},
        check_results=[*check_results(published.audits), _warning(log_days.segment_audit(collected))])


@dg.asset(partitions_def=click_days, group_name="feedback", kinds={"parquet"}, owners=[OWNER], code_version="1",
          check_specs=[*check_specs("click_events", {clicks.ROWS_CHECK: "the table holds every readable file's rows"}),
                       _warning_spec("click_events", clicks.FILES_CHECK, "every click file of the day is readable")])
def click_events(context: dg.AssetExecutionContext, source: SourceResource, warehouse: WarehouseResource):
    """The day's click events (request id, restaurant id, time, clicked) from the source: local
    files under PIPELINE_CLICK_EVENTS_DIR (what `pipeline simulate` writes). An unreadable file is
    rejected by name and the rest published."""
    day = context.partition_key
    with tempfile.TemporaryDirectory() as scratch:
        files = source.open().click_event_files(day, Path(scratch))
        rejected, published = yield from published_or_failed(lambda: clicks.publish_day(
            files, day, warehouse.layout().click_events(day), on_wait=context.log.info))
    for name, why in rejected.items():
        context.log.warning(f"click_events {day}: file {name} rejected: {why}")
    yield dg.MaterializeResult(metadata={
        **published_metadata(published), "dagster/row_count": published.record["events"],
        "events": published.record["events"], "files": len(files), "files_rejected": len(rejected)},
        check_results=[*check_results(published.audits), _warning(clicks.files_audit(rejected, len(files)))])


def _label_inputs(layout: Warehouse, day: str) -> tuple[Path, labels.Clicks, pa.ChunkedArray | None, dict]:
    """The day's impressions file, its clicks (those of the next day too, once published), the
    previous day's request ids (so a click on one is not called unknown) and where they came from."""
    shown_dir, events_dir = _live(layout.impressions(day)), _live(layout.click_events(day))
    missing = [name for name, found in (("impressions", shown_dir), ("click_events", events_dir)) if found is None]
    if shown_dir is None or events_dir is None:
        raise FileNotFoundError(f"labeled_impressions {day} needs the day's impressions and click_events "
                                f"published (missing: {', '.join(missing)})")
    next_dir, previous_dir = _live(layout.click_events(_next_day(day))), _live(layout.impressions(_next_day(day, -1)))
    clicks_of_day = labels.Clicks.scan(clicks.published_file(events_dir),
                                       clicks.published_file(next_dir) if next_dir else None)
    previous = pq.read_table(log_days.path(previous_dir), columns=["request_id"]).column("request_id") \
        if previous_dir else None
    sources = {"impressions": shown_dir.name, "click_events": events_dir.name,
               "next_day_click_events": next_dir.name if next_dir else None}
    return log_days.path(shown_dir), clicks_of_day, previous, sources


class LabelingConfig(dg.Config):
    """Which labeled rows become training clicks."""

    training_ranks: int = Field(default=1, ge=0, description=(
        "Rows shown at ranks 1..N become training clicks (0: every rank). Below the top, a restaurant not "
        "clicked was often not looked at (position bias): a label there says 'not examined' as much as 'not "
        "wanted' (docs/SERVING.md, 'Training on what was shown')."))


@dg.asset(partitions_def=click_days, group_name="feedback", kinds={"parquet"}, owners=[OWNER], code_version="2",
          deps=[impressions, click_events], automation_condition=FOLLOWS_PARENTS_EVERY_DAY,
          check_specs=check_specs("labeled_impressions", {
              labels.ROWS_CHECK: "one labeled row and one training row per restaurant shown",
              labels.CLICKS_CHECK: "the clicks written are the clicks joined"}))
def labeled_impressions(context: dg.AssetExecutionContext, config: LabelingConfig, warehouse: WarehouseResource):
    """Every restaurant shown that day, with whether it was clicked (joined on request id and
    restaurant id; clicks of the next day count once published), and the same rows as training
    clicks in the reference format, which raw_clicks adds to the day. Clicks naming an unknown
    request, or a restaurant the answer did not show, are counted and not joined."""
    day = context.partition_key
    layout = warehouse.layout()
    shown_file, clicks_of_day, previous, sources = _label_inputs(layout, day)
    published = yield from published_or_failed(lambda: labels.publish(
        shown_file, clicks_of_day, previous, day, layout.labeled_impressions(day), sources,
        on_wait=context.log.info, ranks=config.training_ranks))
    labeled = published.written
    if labeled.unknown_request_clicks or labeled.clicks_not_shown:
        context.log.warning(f"labeled_impressions {day}: {labeled.unknown_request_clicks} clicks for unknown "
                            f"requests, {labeled.clicks_not_shown} for restaurants not shown: not joined")
    yield dg.MaterializeResult(metadata={
        **published_metadata(published), "dagster/row_count": labeled.shown, "rows": labeled.shown,
        "clicks": labeled.clicks, "ctr": labeled.clicks / labeled.shown if labeled.shown else 0.0,
        "click_events": labeled.click_events, "unknown_request_clicks": labeled.unknown_request_clicks,
        "clicks_not_shown": labeled.clicks_not_shown, "repeated_clicks": labeled.repeated_clicks},
        check_results=check_results(published.audits))


class OnlineMetricsConfig(dg.Config):
    """When a fall in the click rate is worth a warning."""

    margin: float = Field(default=0.10, ge=0, le=1, description=(
        "Warn when a model version's CTR@5 is below the previous day's CTR@5 (over all versions) by more than "
        "this fraction of it."))
    min_impressions: int = Field(default=200, ge=1, description=(
        "Only versions with at least this many impressions at ranks 1-5 that day are compared (fewer are noise)."))


def _catalogue(layout: Warehouse) -> int:
    """Restaurants in the live geo index (what could have been shown), 0 if none is published."""
    try:
        return int(Artifact(layout.geo_index).record().get("restaurants", 0))
    except FileNotFoundError:
        return 0


@dg.asset(partitions_def=click_days, group_name="feedback", kinds={"polars"}, owners=[OWNER], code_version="2",
          deps=[labeled_impressions], automation_condition=FOLLOWS_PARENTS_EVERY_DAY,
          check_specs=[_warning_spec("online_metrics", CTR_CHECK, (
              "no model version's CTR@5 fell below the previous day's by more than the configured margin"))])
def online_metrics(context: dg.AssetExecutionContext, config: OnlineMetricsConfig, warehouse: WarehouseResource):
    """The day's click rates per model version: requests, impressions, clicks, CTR@1/5/10, coverage of
    the catalogue, mean score of clicked and not clicked restaurants, the AUC of its scores; with a
    challenger out, the AUC of the shadow model's scores and of the answering model's on the same
    shown restaurants (``shadow_auc/VERSION``, ``shadow_answering_auc/VERSION``); plotted per day in
    the Plots tab, with the click rate by rank drawn per version. Warns when a version's CTR@5 falls below
    the previous day's by more than the margin."""
    day = context.partition_key
    layout = warehouse.layout()
    labeled_dir = _live(layout.labeled_impressions(day))
    if labeled_dir is None:
        raise FileNotFoundError(f"online_metrics {day} needs labeled_impressions {day} published")
    rows = labels.scan(labeled_dir)
    metrics = day_metrics(rows, _catalogue(layout))
    previous_dir = _live(layout.online_metrics(_next_day(day, -1)))
    previous = json.loads((previous_dir / "metrics.json").read_text()) if previous_dir else None
    drops = ctr_drops(metrics, previous, config.margin, config.min_impressions)

    shadow = shadow_metrics(rows)

    def write(staging: Path) -> dict:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / "shadow.json").write_text(json.dumps(shadow, indent=2))
        return metrics

    published = yield from published_or_failed(lambda: write_audit_publish(
        layout.online_metrics(day), write, lambda staging, written: [], on_wait=context.log.info,
        record={"day": day, "labeled_impressions": labeled_dir.name}))
    overall = metrics[ALL]
    versions = {v: m for v, m in metrics.items() if v != ALL}
    per_version = {f"{name}/{version}": m[name] for version, m in versions.items()
                   for name in ("ctr_at_5", "impressions", "auc")}
    per_shadow = {f"shadow_{name}/{pair['shadow_version']}": pair[key] for pair in shadow
                  for name, key in (("auc", "shadow_auc"), ("answering_auc", "auc"), ("rows", "rows"))}
    check = AuditResult(CTR_CHECK, not drops, {"versions": len(versions), "dropped": len(drops),
                                                "previous_ctr_at_5": previous[ALL]["ctr_at_5"] if previous else 0.0},
                        "; ".join(f"{v}: {why}" for v, why in drops.items()) if drops else
                        ("" if previous else "no previous day to compare with"))
    yield dg.MaterializeResult(metadata={
        **published_metadata(published), **{k: v for k, v in overall.items()}, **per_version, **per_shadow,
        "versions": dg.MetadataValue.json(versions),
        "ctr_by_rank": picture(ctr_by_rank_svg(ctr_by_rank(rows)), "click rate by rank per model version")},
        check_results=[_warning(check, "online_metrics")])
