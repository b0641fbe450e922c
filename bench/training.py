"""Benchmark: full training epochs on a reference dataset, against the reference's naive loop.

    python bench/training.py --data DIR [--reference-constraints | --epochs N --batch-size 8192 --lr 2e-3]
                             [--threads 0] [--compare-with GIT_REF [--compare-threads 2]] [--busy]
                             [--thread-sweep 1,2,0] [--sweep 4096,8192,16384] [--baseline-rows 300000]
                             [--out bench/out]

Ours: the processed partitions (built first, with the pipeline's own processing, not timed as
training), then a full retrain of the reference architecture with Adam through the fused path,
in its own process; then accuracy/AUC on the test files and a TorchScript export whose path is
printed as ``model_path``. ``peak_rss_mb`` is that whole process's high-water mark, evaluation
included (``train_peak_rss_mb``: before evaluating). ``--reference-constraints``: the
assignment's settings (lr 1e-8, 5 epochs, batch 1024; ``REFERENCE_CONSTRAINTS``).
``--threads 0`` lets training choose 1 or 2 threads by measuring. ``--compare-with REF`` runs the
same settings with the code of git commit REF (a worktree under --out) in the same invocation,
reported under ``before``. ``--busy`` keeps one competing busy process running meanwhile.
``--thread-sweep`` adds one timed epoch per thread setting (with ``--busy``, under contention).
``--sweep`` adds one timed epoch per batch size. Baseline: the reference's loop (pandas merge,
then per batch ``torch.tensor`` of a DataFrame slice, autograd through the plain module) on
``--baseline-rows`` rows. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if "--code" in sys.argv:  # another commit's code (--compare-with): its pipeline package comes first
    sys.path.insert(0, sys.argv[sys.argv.index("--code") + 1])

from pipeline_devtools.benchmarks import machine, run_role  # noqa: E402

START = dt.date(2026, 1, 1)


def prepare(data: Path, warehouse: Path) -> dict:
    """Feature snapshots and processed partitions, as the pipeline's assets make them."""
    from pipeline.data.layout import ReferenceDataset, Warehouse
    from pipeline_devtools.warehouse_build import build_from_reference

    started = time.perf_counter()
    build_from_reference(ReferenceDataset(data, START), Warehouse(warehouse))
    return {"prepare_seconds": round(time.perf_counter() - started, 2)}


def _configure_from_environment() -> None:
    """This script is an entry point: the pipeline's settings (PIPELINE_NATIVE_KERNELS, ...) from the
    environment. Older commits (--compare-with) read the environment themselves."""
    import pipeline

    try:
        from pipeline import runtime
        from pipeline.settings import load_settings
    except ImportError:
        return
    if Path(runtime.__file__).parent != Path(pipeline.__file__).parent:  # found in the editable install's tree
        return
    runtime.configure(load_settings())


def ours(data: Path, warehouse: Path, settings: dict, out: Path) -> dict:
    import dataclasses

    import pipeline
    from pipeline.data.layout import ReferenceDataset, Warehouse
    from pipeline.model.batches import FeatureTables
    from pipeline.model.evaluate import evaluate_files
    from pipeline.model.export import export_torchscript

    try:
        from pipeline.model.checkpoint import load_checkpoint_model
        from pipeline.model.training import TrainConfig, train
    except ImportError:  # --compare-with a commit from before training was a package
        from pipeline.model.train import TrainConfig, train
        from pipeline.model.train import load_model as load_checkpoint_model
    from pipeline_devtools.process_metrics import peak_rss_mb

    _configure_from_environment()
    layout = Warehouse(warehouse)
    known = {f.name for f in dataclasses.fields(TrainConfig)}  # older commits (--compare-with) know fewer
    settings = {k: v for k, v in {"mode": "full", **settings}.items() if k in known}
    report = train(layout, TrainConfig(**settings),
                   log=lambda m: print(m, file=sys.stderr)).report  # published as the warehouse's model of record
    train_peak = peak_rss_mb()
    model, _ = load_checkpoint_model(layout.checkpoint)
    result = evaluate_files(model, ReferenceDataset(data, START).test_files(), FeatureTables.load(layout))
    model_path = out / "model.pt"
    out.mkdir(parents=True, exist_ok=True)
    export_torchscript(model, model_path)
    return {"code": str(Path(pipeline.__file__).parent.parent), "rows_per_epoch": report.rows // settings["epochs"],
            **settings, **getattr(report, "threads", {}), "kernel": getattr(report, "kernel", "torch"),
            "validation": getattr(report, "validation", []), "selected_epoch": getattr(report, "selected_epoch", None),
            "epoch_seconds": [round(s, 2) for s in report.epoch_seconds],
            "rows_per_s": round(report.rows / sum(report.epoch_seconds)), "peak_rss_mb": round(peak_rss_mb(), 1),
            "train_peak_rss_mb": round(train_peak, 1),
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


@contextlib.contextmanager
def busy_process(enabled: bool):
    """One competing busy process (a spinning interpreter) while the block runs."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if enabled else None
    try:
        yield
    finally:
        if process is not None:
            process.kill()
            process.wait()


def worktree(ref: str, out: Path) -> Path:
    """A checkout of commit ``ref`` under ``out`` (made once, reused)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True, capture_output=True,
                         text=True).stdout.strip()
    path = out / f"code-{sha}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha], check=True,
                       capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--reference-constraints", action="store_true",
                        help="the assignment's settings: lr 1e-8, 5 epochs, batch 1024 (overrides the three)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=0, help="0: training chooses 1 or 2 by measuring")
    parser.add_argument("--validation-days", type=int, help="newest days held out (default: TrainConfig's)")
    parser.add_argument("--compare-with", metavar="GIT_REF", help="also run this commit's code, same settings")
    parser.add_argument("--compare-threads", type=int, default=2, help="threads for --compare-with's code")
    parser.add_argument("--busy", action="store_true", help="one competing busy process during training")
    parser.add_argument("--code", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sweep", default="", help="comma-separated batch sizes, one timed epoch each")
    parser.add_argument("--thread-sweep", default="", help="comma-separated thread settings (0: adaptive), one "
                                                           "timed epoch each, under --busy too")
    parser.add_argument("--baseline-rows", type=int, default=300_000)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--warehouse", type=Path, help="reuse (or keep) the prepared warehouse here")
    parser.add_argument("--role", choices=("prepare", "ours", "baseline"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_constraints:
        from pipeline.model.training import REFERENCE_CONSTRAINTS
        args.epochs, args.batch_size, args.lr, args.validation_days = (
            REFERENCE_CONSTRAINTS[k] for k in ("epochs", "batch_size", "lr", "validation_days"))
    data, out = args.data.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    warehouse = (args.warehouse or out / "warehouse").resolve()
    if args.role == "prepare":
        print(json.dumps(prepare(data, warehouse)))
    elif args.role == "ours":
        settings = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads}
        if args.validation_days is not None:
            settings["validation_days"] = args.validation_days
        print(json.dumps(ours(data, warehouse, settings, out)))
    elif args.role == "baseline":
        print(json.dumps(baseline(data, args.baseline_rows)))
    else:
        common = ["--data", str(data), "--out", str(out), "--warehouse", str(warehouse)]
        result = {}
        if not (warehouse / "processed_clicks").exists():
            result |= run_role(__file__, *common, "--role", "prepare")
        def settings(epochs: int, batch_size: int | str) -> list[str]:
            given = ["--role", "ours", "--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", str(args.lr)]
            held_out = [] if args.validation_days is None else ["--validation-days", str(args.validation_days)]
            return given + held_out

        with busy_process(args.busy):
            threads_sweep = []
            for threads in filter(None, args.thread_sweep.split(",")):
                one = run_role(__file__, *common, *settings(1, args.batch_size), "--threads", threads)
                threads_sweep.append({k: one.get(k) for k in ("threads", "epoch_seconds", "rows_per_s",
                                                               "steps_on_1_thread", "steps_on_2_threads")})
            if threads_sweep:
                result["thread_sweep"] = threads_sweep
            if args.compare_with:
                code = worktree(args.compare_with, out)
                before = run_role(__file__, *common, *settings(args.epochs, args.batch_size), "--threads",
                                  str(args.compare_threads), "--code", str(code))
                result["before"] = {"commit": args.compare_with, **before}
            result |= run_role(__file__, *common, *settings(args.epochs, args.batch_size), "--threads",
                               str(args.threads))
        result["busy_competitor"] = args.busy
        sweep = []
        for size in filter(None, args.sweep.split(",")):
            one = run_role(__file__, *common, *settings(1, size), "--threads", str(args.threads))
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
