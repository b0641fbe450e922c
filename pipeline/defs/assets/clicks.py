"""Daily click partitions: raw extracts, then validated, id-resolved, model-ready chunks.

Both assets accept a single partition or a range in one run: a backfill of any length is one run
that processes its days one after another (``BackfillPolicy.single_run()``; measured against runs
of 8 days side by side in docs/PERFORMANCE.md), and ``dg launch --partition-range`` works. With
workers on several machines, ``PIPELINE_BACKFILL_DAYS_PER_RUN=N`` makes a backfill runs of N days.
Every day is its own artifact, written as a candidate, audited and published on its own: a
rejected day stops the run with the days before it published and the rejected day's previous
version still live. Two runs writing the same day take turns (a lock per partition in the pure
core); a Dagster pool per asset would also serialize different days, so the partitioned assets
have none.
"""

import time

import dagster as dg
from pydantic import Field

from pipeline.audits import AuditResult, Rejected
from pipeline.data.clicks import CHUNKS_CHECK, DEFAULT_CHUNK_ROWS, RECONCILE_CHECK, publish_partition
from pipeline.data.features import RESTAURANTS, USERS, load_id_index
from pipeline.data.layout import Warehouse
from pipeline.data.raw_clicks import DEFAULT_BATCH_ROWS
from pipeline.data.sources import RAW_CHECK, LabeledClicks, publish_raw_partition, raw_files
from pipeline.defs.columns import PROCESSED_CLICKS, RAW_CLICKS, column_schema
from pipeline.defs.metadata import throughput
from pipeline.defs.partitions import click_days
from pipeline.defs.policies import FOLLOWS_PARENTS_EVERY_DAY, FOLLOWS_RAW, OWNER, PROCESSED_FRESHNESS
from pipeline.defs.publishing import check_results, check_specs, published_metadata, rejection
from pipeline.defs.resources import SourceResource, WarehouseResource
from pipeline.defs.retries import SOURCE_RETRY, only_transient_retried
from pipeline.defs.settings import SETTINGS
from pipeline.feedback.labels import TRAINING
from pipeline.publish import Artifact


def backfill_policy(days_per_run: int) -> dg.BackfillPolicy:
    """``PIPELINE_BACKFILL_DAYS_PER_RUN``: 0 (default) one run per backfill, the fastest on one machine;
    N runs of N days, which the run queue spreads over workers or pods (docs/PERFORMANCE.md, "Celery workers")."""
    if days_per_run < 0:
        raise ValueError(f"PIPELINE_BACKFILL_DAYS_PER_RUN={days_per_run!r} must be 0 (one run per backfill) "
                         f"or a number of days per run")
    return dg.BackfillPolicy.single_run() if days_per_run == 0 else dg.BackfillPolicy.multi_run(days_per_run)


BACKFILL = backfill_policy(SETTINGS.dagster.backfill_days_per_run)
RAW_CHECKS = {RAW_CHECK: "every extracted file is readable click parquet holding the rows the source wrote"}
PROCESSED_CHECKS = {RECONCILE_CHECK: "raw rows = kept rows + dropped rows",
                    CHUNKS_CHECK: "every chunk file holds the rows the manifest says"}


class RawClicksConfig(dg.Config):
    """Whether days already extracted are extracted again, and whether served days add their labels."""

    reextract: bool = Field(default=False, description=(
        "Extract the selected days again even if they are published. By default a published day is kept while "
        "the source's version of it is unchanged; BigQuery cannot tell that for free, so its published days are "
        "kept until this is set (each BigQuery extract is billed)."))
    include_labeled_impressions: bool = Field(default=True, description=(
        "Add the day's labeled impressions (what the API showed, clicked or not) as training clicks, when "
        "published. A day with them and without source clicks (a day only served) is extracted from them alone."))


class ProcessingConfig(dg.Config):
    """How processed partitions are laid out and streamed."""

    chunk_rows: int = Field(default=DEFAULT_CHUNK_ROWS, gt=0, description=(
        "Rows per chunk file (every chunk but a partition's last holds exactly this many)."))
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, gt=0, description=(
        "Rows read from parquet at a time (bounds memory together with chunk_rows)."))


def _combined(per_day: dict[str, list[AuditResult]]) -> list[AuditResult]:
    """One result per check over the run's days: passed if it passed on every day."""
    names = dict.fromkeys(a.name for audits in per_day.values() for a in audits)
    combined = []
    for name in names:
        results = {day: a for day, audits in per_day.items() for a in audits if a.name == name}
        failed = {day: a.description for day, a in results.items() if not a.passed}
        combined.append(AuditResult(name, not failed, {"partitions": len(results), "failed_partitions": len(failed),
                                                      "failures": failed},
                                    "; ".join(f"{day}: {why}" for day, why in failed.items())))
    return combined


def _publish_days(context: dg.AssetExecutionContext, publish_day):
    """Publish each day with ``publish_day(day) -> (metadata, Published)``; yield check results
    over all days, and fail naming the day when one is rejected."""
    audits: dict[str, list[AuditResult]] = {}
    for day in context.partition_keys:
        try:
            metadata, published = publish_day(day)
        except Rejected as rejected:
            audits[day] = rejected.results
            yield from check_results(_combined(audits))
            raise rejection(rejected) from None
        audits[day] = published.audits
        context.add_asset_metadata({**metadata, **published_metadata(published)}, partition_key=day)
    yield dg.MaterializeResult(check_results=check_results(_combined(audits)))


def _labeled_clicks(layout: Warehouse, day: str) -> LabeledClicks | None:
    """The training clicks of the day's published labeled impressions, if any."""
    artifact = Artifact(layout.labeled_impressions(day))
    version = artifact.live_version()
    return LabeledClicks(artifact.version_path(version) / TRAINING, version) if version else None


@dg.asset(partitions_def=click_days, backfill_policy=BACKFILL, group_name="clicks", kinds={"parquet"},
          deps=["labeled_impressions"], automation_condition=FOLLOWS_PARENTS_EVERY_DAY,
          check_specs=check_specs("raw_clicks", RAW_CHECKS), owners=[OWNER], code_version="1",
          metadata=column_schema(RAW_CLICKS), retry_policy=SOURCE_RETRY)
def raw_clicks(context: dg.AssetExecutionContext, config: RawClicksConfig, source: SourceResource,
               warehouse: WarehouseResource):
    """The day's raw click log (user_id, restaurant_id, click) as extracted from the source (local
    parquet, or BigQuery: streamed, its cost reported), with the day's labeled impressions added as
    training clicks when published; schema-checked, published with each file's crc32. A day already
    published from the same source version and labels is kept, not extracted (or billed) again,
    unless reextract is set. Transient source errors are retried."""
    with only_transient_retried():
        src = source.open()

        def publish_day(day: str):
            started = time.perf_counter()
            layout = warehouse.layout()
            labeled = _labeled_clicks(layout, day) if config.include_labeled_impressions else None
            extract, published, extracted = publish_raw_partition(
                src, day, layout.raw_clicks(day), on_wait=context.log.info, reextract=config.reextract,
                labeled=labeled)
            if extracted:
                context.log.info(f"raw_clicks {day}: {extract.rows} rows from {extract.origin}")
                for note in extract.notes:
                    context.log.warning(f"raw_clicks {day}: {note}")
            else:
                context.log.info(f"raw_clicks {day}: already extracted (version {published.version}), kept; "
                                 "set reextract to extract it again")
            # A kept day took no time to extract: no throughput figures to plot for it.
            measured = (throughput(extract.rows, published.bytes, time.perf_counter() - started) if extracted
                        else {"dagster/row_count": extract.rows, "rows": extract.rows, "bytes": published.bytes})
            return ({**measured, "files": len(extract.files), "origin": extract.origin, "extracted": int(extracted),
                     **extract.metadata}, published)

        yield from _publish_days(context, publish_day)


@dg.asset(partitions_def=click_days, backfill_policy=BACKFILL, group_name="clicks",
          kinds={"arrow"}, deps=[raw_clicks, "user_features", "restaurant_features"],
          check_specs=check_specs("processed_clicks", PROCESSED_CHECKS), owners=[OWNER], code_version="1",
          metadata=column_schema(PROCESSED_CLICKS), automation_condition=FOLLOWS_RAW,
          freshness_policy=PROCESSED_FRESHNESS)
def processed_clicks(context: dg.AssetExecutionContext, config: ProcessingConfig,
                     warehouse: WarehouseResource):
    """Validated, id-resolved, model-ready click rows in fixed-size Arrow chunks: user and
    restaurant snapshot rows (int32) and click (int8). Rows with nulls, unknown ids or a click
    outside {0, 1} are dropped and counted by reason; repeated impressions are kept and counted."""
    layout = warehouse.layout()
    users, users_ids_version = load_id_index(layout.user_features, USERS)
    restaurants, restaurants_ids_version = load_id_index(layout.restaurant_features, RESTAURANTS)

    def publish_day(day: str):
        files = raw_files(layout.raw_clicks(day))
        stats, published = publish_partition(
            files, users, restaurants, layout.processed_clicks(day), config.chunk_rows, config.batch_rows,
            on_wait=context.log.info, day=day, sources=[str(f) for f in files],
            users_ids_version=users_ids_version, restaurants_ids_version=restaurants_ids_version)
        context.log.info(
            f"processed_clicks {day}: kept {stats.rows}, dropped {stats.dropped_rows} "
            f"{stats.dropped}, duplicates {stats.duplicates}, {stats.rows / max(stats.seconds, 1e-9):,.0f} rows/s")
        return ({**throughput(stats.rows, stats.bytes, stats.seconds), "raw_rows": stats.raw_rows,
                 "dropped_rows": stats.dropped_rows, **{f"dropped_{r}": n for r, n in stats.dropped.items()},
                 "duplicates": stats.duplicates, "chunks": len(stats.chunks)}, published)

    yield from _publish_days(context, publish_day)
