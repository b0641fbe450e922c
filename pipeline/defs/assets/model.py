"""The click model: training, evaluation on held-out data, and the TorchScript export."""

import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import torch

from pipeline.atomic import staged_file
from pipeline.defs.assets.clicks import processed_clicks
from pipeline.defs.resources import SourceResource, WarehouseResource
from pipeline.model.batches import FeatureTables
from pipeline.model.evaluate import evaluate_files
from pipeline.model.export import export_torchscript, verify_torchscript
from pipeline.model.train import TrainConfig, load_model, train

PARITY_CHECK = "torchscript_matches_eager"
PARITY_TOLERANCE = 1e-5
PARITY_ROWS = 4096


_DEFAULT = TrainConfig()  # the single source of the training defaults


class ClickModelConfig(dg.Config):
    """Training hyperparameters and mode (defaults: the reference architecture and Adam)."""

    mode: str = _DEFAULT.mode
    """incremental: warm-start and train once on the processed days not yet trained on;
    full: a fresh model on every day of [window_start, window_end] for `epochs` epochs."""
    hidden1: int = _DEFAULT.hidden[0]
    hidden2: int = _DEFAULT.hidden[1]
    lr: float = _DEFAULT.lr
    batch_size: int = _DEFAULT.batch_size
    epochs: int = _DEFAULT.epochs
    window_start: str | None = _DEFAULT.window_start
    window_end: str | None = _DEFAULT.window_end
    seed: int = _DEFAULT.seed
    threads: int = _DEFAULT.threads
    checkpoint_every_chunks: int = _DEFAULT.checkpoint_every_chunks
    restart: bool = _DEFAULT.restart
    """Discard an unfinished run recorded in the checkpoint instead of resuming it."""

    def to_train_config(self) -> TrainConfig:
        return TrainConfig(mode=self.mode, hidden=(self.hidden1, self.hidden2), lr=self.lr,
                           batch_size=self.batch_size, epochs=self.epochs, window_start=self.window_start,
                           window_end=self.window_end, seed=self.seed, threads=self.threads,
                           checkpoint_every_chunks=self.checkpoint_every_chunks, restart=self.restart)


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


@dg.asset(group_name="model", kinds={"pytorch"},
          deps=[processed_clicks, "user_features", "restaurant_features"])
def click_model(context: dg.AssetExecutionContext, config: ClickModelConfig,
                warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The click model (40→256→128→1, Adam), trained incrementally on new processed days or
    fully retrained over a window; its checkpoint records every partition it was trained on."""
    layout = warehouse.layout()
    state, report = train(layout, layout.checkpoint, config.to_train_config(), log=context.log.info)
    weights = hashlib.blake2b(digest_size=12)
    for tensor in state.model.values():
        weights.update(tensor.numpy().tobytes())
    metadata = {
        "rows_trained": report.rows, "partitions_trained": len(report.days),
        "partitions_in_model": len(state.trained), "rows_in_model": sum(state.trained.values()),
        "seconds": round(report.seconds, 3), "rows_per_s": round(report.rows_per_s, 1),
        "epochs": len(report.epoch_seconds),
        "epoch_seconds_max": round(max(report.epoch_seconds, default=0.0), 3),
        "train_loss": report.mean_loss, "steps": state.steps, "resumed": int(report.resumed),
        "prequential_accuracy": _mean(report.prequential, "prequential_accuracy"),
        "prequential_auc": _mean(report.prequential, "prequential_auc"),
        "prequential_log_loss": _mean(report.prequential, "prequential_log_loss"),
        "mode": report.mode,
        "days_trained": dg.MetadataValue.json(report.days),
        "prequential_by_day": dg.MetadataValue.json(report.prequential),
        "feature_versions": dg.MetadataValue.json(state.versions),
        "checkpoint": dg.MetadataValue.path(str(layout.checkpoint)),
    }
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(weights.hexdigest()))


@dg.asset(group_name="model", kinds={"pytorch"}, deps=[click_model])
def model_evaluation(context: dg.AssetExecutionContext, source: SourceResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The click model scored on the held-out test files: accuracy (threshold 0.5), ROC AUC,
    log loss and a calibration table."""
    layout = warehouse.layout()
    model, state = load_model(layout.checkpoint)
    with tempfile.TemporaryDirectory(prefix="test-") as scratch:
        result = evaluate_files(model, source.open().test_files(Path(scratch)), FeatureTables.load(layout))
    result["model_partitions"] = len(state.trained)
    with staged_file(layout.evaluation) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    calibration = result.pop("calibration")
    return dg.MaterializeResult(metadata={
        "accuracy": result["accuracy"], "auc": result["auc"], "log_loss": result["log_loss"],
        "rows": result["rows"], "dagster/row_count": result["rows"],
        "all_zeros_accuracy": result["all_zeros_accuracy"],
        "dropped_rows": sum(result["dropped"].values()),
        "calibration": dg.MetadataValue.md(
            "| probability | rows | mean predicted | observed rate |\n|---|---|---|---|\n" + "\n".join(
                f"| {r['bin']} | {r['rows']} | {r['mean_predicted']:.4f} | {r['observed_rate']:.4f} |"
                for r in calibration)),
    })


@dg.asset(group_name="model", kinds={"pytorch"}, deps=[model_evaluation, click_model],
          check_specs=[dg.AssetCheckSpec(PARITY_CHECK, asset="torchscript_model", blocking=True,
                                         description=f"fresh-process TorchScript logits within "
                                                     f"{PARITY_TOLERANCE} of the eager model")])
def torchscript_model(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The click model as TorchScript ([n, 40] float32 → n logits), loaded and checked against
    the eager model in a fresh process that does not import this project."""
    layout = warehouse.layout()
    model, _ = load_model(layout.checkpoint)
    size = export_torchscript(model, layout.torchscript)
    tables = FeatureTables.load(layout)
    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, len(tables.users), (PARITY_ROWS,), generator=g)
    restaurants = torch.randint(0, len(tables.restaurants), (PARITY_ROWS,), generator=g)
    sample = torch.cat([tables.users[users], tables.restaurants[restaurants]], dim=1)
    verified = verify_torchscript(layout.torchscript, model, sample)
    passed = (verified["shape_ok"] and not verified["imported_project"]
              and verified["max_abs_diff"] <= PARITY_TOLERANCE)
    return dg.MaterializeResult(
        metadata={"bytes": size, "latency_p50_ms": verified["latency_p50_ms"],
                  "latency_p99_ms": verified["latency_p99_ms"],
                  "latency_candidates": verified["latency_candidates"],
                  "max_abs_diff": verified["max_abs_diff"],
                  "path": dg.MetadataValue.path(str(layout.torchscript))},
        check_results=[dg.AssetCheckResult(check_name=PARITY_CHECK, passed=bool(passed),
                                           metadata={"max_abs_diff": verified["max_abs_diff"],
                                                     "rows": PARITY_ROWS})])
