"""Benchmark: the loop at the reference's size. A model trained on the first days of a dataset is
served with the impression log on; ``pipeline simulate`` sends the synthetic users' traffic and
decides their clicks; the log and the clicks are then labeled and measured as the assets do.

    python bench/simulate.py --data /tmp/full [--train-days 2] [--rate 30] [--duration 60] [--seed 1]
                             [--store sqlite|redis] [--workers 1]

Reports the simulator's summary (realised CTR@k, and the expected CTR@k of the served, a random and
the best ranking of the same restaurants within range), the online metrics computed from the
published log and the click events (which must agree with the simulator's counts), and how long
labeling took. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import torch

from pipeline.data.layout import ReferenceDataset
from pipeline.feedback import click_events, labels
from pipeline.feedback.impressions import collect
from pipeline.feedback.log_format import logged_days
from pipeline.feedback.online_metrics import ALL, online_metrics
from pipeline.feedback.simulate import simulate
from pipeline.geo.index import GeoIndex
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.export import publish_export
from pipeline.model.training import TrainConfig, train
from pipeline.store.base import FeatureTable
from pipeline_devtools.benchmarks import machine
from pipeline_devtools.serving_bench import START, online_store, serving
from pipeline_devtools.warehouse_build import build_warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--train-days", type=int, default=2)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", choices=("redis", "sqlite"), default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp, contextlib.ExitStack() as stack:
        tmp_path = Path(tmp)
        started = time.perf_counter()
        warehouse = build_warehouse(ReferenceDataset(args.data.resolve(), START), tmp_path / "warehouse",
                                    chunk_rows=1 << 18, days=args.train_days)
        result = train(warehouse, TrainConfig(), log=lambda message: None)
        model, state = load_checkpoint_model(warehouse.checkpoint)
        tables = FeatureTables.load(warehouse)
        sample = torch.cat([tables.users[:256], tables.restaurants[:256]], dim=1)
        publish_export(model, warehouse.export, sample, record={"feature_versions": state.versions})
        restaurants = tables.restaurant_snapshot
        GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1]).publish(
            warehouse.geo_index, restaurants.ids)
        store, settings = online_store(args.store, tmp_path, stack)
        store.publish(FeatureTable.of(tables.user_snapshot), FeatureTable.of(restaurants))
        store.close()
        del tables, restaurants
        prepared_s = time.perf_counter() - started
        log_dir, clicks_dir = tmp_path / "log", tmp_path / "clicks"
        with serving(warehouse, {**settings, "PIPELINE_IMPRESSION_LOG_DIR": str(log_dir)}, args.workers,
                     log=tmp_path / "api.log") as (base, _):
            summary = simulate(args.data, base, args.rate, args.duration, args.seed, clicks_dir)
        labeling = time.perf_counter()
        labeled_days, joined = [], {"clicks": 0, "unknown_request_clicks": 0, "rows": 0}
        for day in logged_days(log_dir):
            out = tmp_path / "labeled" / day
            out.mkdir(parents=True)
            collect(log_dir, day, out / "impressions.parquet")
            events = [click_events.read(p) for p in click_events.day_files(clicks_dir, day)]
            day_events = pa.concat_tables(events) if events else click_events.SCHEMA.empty_table()
            labeled = labels.label_into(out / "impressions.parquet", labels.Clicks.of(day_events), None, out)
            labeled_days.append(labels.scan(out))
            joined = {"clicks": joined["clicks"] + labeled.clicks, "rows": joined["rows"] + labeled.shown,
                      "unknown_request_clicks": joined["unknown_request_clicks"] + labeled.unknown_request_clicks}
        metrics = online_metrics(pl.concat(labeled_days), 100_000)[ALL] if labeled_days else {}
        labeling_s = time.perf_counter() - labeling
    print(json.dumps({"train_days": args.train_days, "trained_rows": result.report.rows,
                      "prepared_s": round(prepared_s, 1), "simulator": summary, "joined": joined,
                      "online_metrics": metrics, "labeling_s": round(labeling_s, 2), "machine": machine(),
                      "command": " ".join(["python", "bench/simulate.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
