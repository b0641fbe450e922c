"""Daily click partitions: raw extracts, then validated, id-resolved, model-ready chunks.

Both assets accept a single partition or a range in one run (a ranged backfill run processes its
days one after another; parallelism comes from running several runs at once).
"""

import time

import dagster as dg

from pipeline.atomic import staged_dir
from pipeline.data.clicks import DEFAULT_BATCH_ROWS, DEFAULT_CHUNK_ROWS, publish_partition
from pipeline.data.features import RESTAURANTS, USERS, load_id_index
from pipeline.data.sources import raw_files, raw_rows
from pipeline.defs.metadata import throughput
from pipeline.defs.partitions import click_days
from pipeline.defs.resources import SourceResource, WarehouseResource

# UI backfills become runs of at most this many days, which the run queue runs side by side.
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=8)
RECONCILE_CHECK = "raw_rows_reconcile"


class ProcessingConfig(dg.Config):
    """How processed partitions are laid out and streamed."""

    chunk_rows: int = DEFAULT_CHUNK_ROWS
    """Rows per chunk file (every chunk but a partition's last holds exactly this many)."""
    batch_rows: int = DEFAULT_BATCH_ROWS
    """Rows read from parquet at a time (bounds memory together with chunk_rows)."""


@dg.asset(partitions_def=click_days, backfill_policy=BACKFILL, group_name="clicks",
          kinds={"parquet"})
def raw_clicks(context: dg.AssetExecutionContext, source: SourceResource,
               warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The day's raw click log (user_id, restaurant_id, click) as extracted from the source,
    schema-checked, published atomically."""
    src = source.open()
    for day in context.partition_keys:
        target = warehouse.layout().raw_clicks(day)
        started = time.perf_counter()
        with staged_dir(target) as staging:
            extract = src.extract_clicks(day, staging)
        context.add_asset_metadata(
            {**throughput(extract.rows, extract.bytes, time.perf_counter() - started),
             "files": len(extract.files),
             "origin": extract.origin, "path": dg.MetadataValue.path(str(target))},
            partition_key=day)
        context.log.info(f"raw_clicks {day}: {extract.rows} rows from {extract.origin}")
    return dg.MaterializeResult()


@dg.asset(partitions_def=click_days, backfill_policy=BACKFILL, group_name="clicks",
          kinds={"arrow"}, deps=[raw_clicks, "user_features", "restaurant_features"],
          check_specs=[dg.AssetCheckSpec(RECONCILE_CHECK, asset="processed_clicks", blocking=True,
                                         description="raw rows = kept rows + dropped rows")])
def processed_clicks(context: dg.AssetExecutionContext, config: ProcessingConfig,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Validated, id-resolved, model-ready click rows in fixed-size Arrow chunks: user and
    restaurant snapshot rows (int32) and click (int8). Rows with nulls, unknown ids or a click
    outside {0, 1} are dropped and counted by reason; repeated impressions are kept and counted."""
    layout = warehouse.layout()
    users, users_ids_version = load_id_index(layout.user_features, USERS)
    restaurants, restaurants_ids_version = load_id_index(layout.restaurant_features, RESTAURANTS)
    mismatched = {}
    for day in context.partition_keys:
        files = raw_files(layout.raw_clicks(day))
        stats = publish_partition(files, users, restaurants, layout.processed_clicks(day), config.chunk_rows,
                                  config.batch_rows, day=day, sources=[str(f) for f in files],
                                  users_ids_version=users_ids_version,
                                  restaurants_ids_version=restaurants_ids_version)
        source_rows = raw_rows(files)
        if source_rows != stats.rows + stats.dropped_rows:
            mismatched[day] = {"raw": source_rows, "kept": stats.rows, "dropped": stats.dropped_rows}
        context.add_asset_metadata(
            {**throughput(stats.rows, stats.bytes, stats.seconds), "raw_rows": source_rows,
             "dropped_rows": stats.dropped_rows,
             **{f"dropped_{reason}": n for reason, n in stats.dropped.items()},
             "duplicates": stats.duplicates, "chunks": len(stats.chunks),
             "path": dg.MetadataValue.path(str(layout.processed_clicks(day)))},
            partition_key=day)
        context.log.info(
            f"processed_clicks {day}: kept {stats.rows}, dropped {stats.dropped_rows} "
            f"{stats.dropped}, duplicates {stats.duplicates}, {stats.rows / max(stats.seconds, 1e-9):,.0f} rows/s")
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(
        check_name=RECONCILE_CHECK, passed=not mismatched,
        metadata={"partitions": len(context.partition_keys), "mismatched_partitions": len(mismatched),
                  "mismatches": dg.MetadataValue.json(mismatched)})])
