"""Ingest one day (feature snapshots, raw and processed clicks) in its own process, as a Dagster
run does; print whether it succeeded as JSON.

    python ingest_day.py DATASET WAREHOUSE DAY
"""

import json
import sys

import dagster as dg

from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.resources import LocalParquetSourceResource, WarehouseResource

dataset, warehouse, day = sys.argv[1:]
resources = {"source": LocalParquetSourceResource(dataset_dir=dataset, start_date="2026-01-01"),
             "warehouse": WarehouseResource(root=warehouse)}
with dg.instance_for_test() as instance:
    result = dg.materialize([user_features, restaurant_features, raw_clicks, processed_clicks], partition_key=day,
                            resources=resources, instance=instance, raise_on_error=False)
print(json.dumps({"success": result.success}))
