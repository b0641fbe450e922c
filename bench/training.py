"""Benchmark: full training epochs on a reference dataset, against the reference's naive loop.

    python bench/training.py --data DIR --epochs N [--batch-size 8192] [--threads 2]
                             [--sweep 4096,8192,16384] [--baseline-rows 300000] [--out bench/out]

Ours: the processed partitions (built first, with the pipeline's own processing, not timed as
training), then a full retrain of the reference architecture with Adam for N epochs through the
fused path, in its own process (its peak RSS is its own); then accuracy/AUC on the test files and
a TorchScript export whose path is printed as ``model_path``. ``--sweep`` adds one timed epoch per
batch size. Baseline: the reference's loop (pandas merge, then per batch ``torch.tensor`` of a
DataFrame slice, autograd through the plain module) on ``--baseline-rows`` rows.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, run_role  # noqa: E402

START = dt.date(2026, 1, 1)


def prepare(data: Path, warehouse: Path) -> dict:
    """Feature snapshots and processed partitions, as the pipeline's assets make them."""
    from devtools.warehouse_build import build_from_reference
    from pipeline.data.layout import ReferenceDataset, Warehouse

    started = time.perf_counter()
    build_from_reference(ReferenceDataset(data, START), Warehouse(warehouse))
    return {"prepare_seconds": round(time.perf_counter() - started, 2)}


def ours(data: Path, warehouse: Path, epochs: int, batch_size: int, threads: int, out: Path) -> dict:
    from devtools.process_metrics import peak_rss_mb
    from pipeline.data.layout import ReferenceDataset, Warehouse
    from pipeline.model.batches import FeatureTables
    from pipeline.model.evaluate import evaluate_files
    from pipeline.model.export import export_torchscript
    from pipeline.model.train import TrainConfig, load_model, train

    layout = Warehouse(warehouse)
    report = train(layout, TrainConfig(mode="full", epochs=epochs, batch_size=batch_size, threads=threads),
                   log=lambda m: print(m, file=sys.stderr)).report  # published as the warehouse's model of record
    train_peak = peak_rss_mb()
    model, _ = load_model(layout.checkpoint)
    result = evaluate_files(model, ReferenceDataset(data, START).test_files(), FeatureTables.load(layout))
    model_path = out / "model.pt"
    out.mkdir(parents=True, exist_ok=True)
    export_torchscript(model, model_path)
    rows_per_epoch = report.rows // epochs
    return {"rows_per_epoch": rows_per_epoch, "epochs": epochs, "batch_size": batch_size, "threads": threads,
            "epoch_seconds": [round(s, 2) for s in report.epoch_seconds],
            "rows_per_s": round(report.rows / sum(report.epoch_seconds)), "peak_rss_mb": round(train_peak, 1),
            "train_loss": round(report.mean_loss, 5), "test_accuracy": round(result["accuracy"], 5),
            "test_auc": round(result["auc"], 5), "test_log_loss": round(result["log_loss"], 5),
            "test_rows": result["rows"], "model_path": str(model_path.resolve())}


def baseline(data: Path, rows: int) -> dict:
    import pandas as pd
    import torch

    from pipeline.model.network import ClickMLP

    clicks = pd.read_parquet(sorted((data / "train").glob("train_*.parquet"))[0]).head(rows)
    users = pd.read_parquet(data / "user_features.parquet")
    restaurants = pd.read_parquet(data / "restaurant_features.parquet").drop(columns=["latitude", "longitude"])
    frame = clicks.merge(users, on="user_id").merge(restaurants, on="restaurant_id")
    features = [c for c in frame.columns if c.startswith("f")]
    model, loss_fn = ClickMLP(), torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters())
    started = time.perf_counter()
    for start in range(0, len(frame), 1024):
        batch = frame.iloc[start:start + 1024]
        x = torch.tensor(batch[features].values, dtype=torch.float32)
        y = torch.tensor(batch["click"].values, dtype=torch.float32)
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    return {"baseline_rows": len(frame), "baseline_batch_size": 1024, "baseline_threads": torch.get_num_threads(),
            "baseline_rows_per_s": round(len(frame) / seconds),
            "baseline_epoch_seconds_at_50M": round(50_000_000 / (len(frame) / seconds), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sweep", default="", help="comma-separated batch sizes, one timed epoch each")
    parser.add_argument("--baseline-rows", type=int, default=300_000)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--warehouse", type=Path, help="reuse (or keep) the prepared warehouse here")
    parser.add_argument("--role", choices=("prepare", "ours", "baseline"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    data, out = args.data.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    warehouse = (args.warehouse or out / "warehouse").resolve()
    if args.role == "prepare":
        print(json.dumps(prepare(data, warehouse)))
    elif args.role == "ours":
        print(json.dumps(ours(data, warehouse, args.epochs, args.batch_size, args.threads, out)))
    elif args.role == "baseline":
        print(json.dumps(baseline(data, args.baseline_rows)))
    else:
        common = ["--data", str(data), "--out", str(out), "--warehouse", str(warehouse)]
        result = {}
        if not (warehouse / "processed_clicks").exists():
            result |= run_role(__file__, *common, "--role", "prepare")
        result |= run_role(__file__, *common, "--role", "ours", "--epochs", str(args.epochs),
                           "--batch-size", str(args.batch_size), "--threads", str(args.threads))
        sweep = []
        for size in filter(None, args.sweep.split(",")):
            one = run_role(__file__, *common, "--role", "ours", "--epochs", "1", "--batch-size", size,
                           "--threads", str(args.threads))
            sweep.append({k: one[k] for k in ("batch_size", "epoch_seconds", "rows_per_s", "peak_rss_mb",
                                               "test_accuracy")})
        if sweep:
            result["batch_sweep"] = sweep
        result |= run_role(__file__, *common, "--role", "baseline", "--baseline-rows", str(args.baseline_rows))
        result["speedup"] = round(result["rows_per_s"] / result["baseline_rows_per_s"], 1)
        result["machine"] = machine()
        result["command"] = " ".join(["python", "bench/training.py", *sys.argv[1:]])
        print(json.dumps(result))


if __name__ == "__main__":
    main()
