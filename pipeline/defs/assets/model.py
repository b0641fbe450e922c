"""The click model: training (gated by held-out evaluation) and the verified exports.

``click_model`` and ``model_evaluation`` are materialized by one step: the model is trained into a
candidate checkpoint, the candidate is evaluated on the held-out files, and the checkpoint is
published as the model of record only if its weights are finite and its accuracy meets the
reference bar. ``model_exports`` exports the model of record (TorchScript and ExportedProgram)
as a candidate, checks both in a fresh process, and publishes them only if they match: the API
never sees an unchecked model.
"""

import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from pipeline.audits import AuditResult
from pipeline.defs.assets.clicks import processed_clicks
from pipeline.defs.charts import calibration_svg, picture
from pipeline.defs.policies import EVALUATED_WITH_THE_MODEL, FOLLOWS_PARENTS, MODEL_FRESHNESS, OWNER, TRAINS_ON_NEW_DAYS
from pipeline.defs.publishing import check_results, check_specs, published_metadata, published_or_failed
from pipeline.defs.resources import SourceResource, WarehouseResource
from pipeline.defs.settings import SETTINGS
from pipeline.model.evaluate import ACCURACY_BAR
from pipeline.model.training import EVALUATION_FILE, FINITE_CHECK, Mode, TrainConfig, TrainResult, train
from pipeline.model.training.release import NOT_RETIRED_CHECK
from pipeline.publish import Artifact
from pipeline.release import mlflow_mirror
from pipeline.release.exporting import current_roles, export_roles
from pipeline.release.gate import COMPARISON_CHECK, release_gate, summary
from pipeline.release.registry import Registry
from pipeline.release.switch import export_of
from pipeline.serving.formats import LATENCY_ROWS, PARITY_CHECKS, PARITY_TOLERANCE

ACCURACY_CHECK = "accuracy_meets_reference_bar"
_DEFAULT = TrainConfig()  # the single source of the training defaults


class ClickModelConfig(dg.Config):
    """Training hyperparameters and mode (defaults: the reference architecture and Adam)."""

    mode: Mode = Field(default=_DEFAULT.mode, description=(
        "incremental: warm-start from the model of record and train once on the processed days it has "
        "not been trained on; full: a fresh model on every day of [window_start, window_end] for `epochs` "
        "epochs, published only if it passes the evaluation gate."))
    hidden1: int = Field(default=_DEFAULT.hidden[0], gt=0, description="Width of the first hidden layer.")
    hidden2: int = Field(default=_DEFAULT.hidden[1], gt=0, description="Width of the second hidden layer.")
    lr: float = Field(default=_DEFAULT.lr, gt=0, description="Adam's learning rate.")
    batch_size: int = Field(default=_DEFAULT.batch_size, gt=0, description="Rows per optimizer step.")
    epochs: int = Field(default=_DEFAULT.epochs, gt=0, description="Passes over the window (full mode only).")
    window_start: str | None = Field(default=_DEFAULT.window_start, description=(
        "First day (YYYY-MM-DD) of a full retrain's window; empty: the first processed day."))
    window_end: str | None = Field(default=_DEFAULT.window_end, description=(
        "Last day (YYYY-MM-DD) of a full retrain's window; empty: the last processed day."))
    seed: int = Field(default=_DEFAULT.seed, description="Seed of the initialization and the shuffling.")
    threads: int = Field(default=_DEFAULT.threads, ge=0, description=(
        "torch threads for training; 0: the faster of 1 and 2, re-measured as it trains (which is faster "
        "changes with the machine's load)."))
    validation_days: int = Field(default=_DEFAULT.validation_days, ge=0, description=(
        "Full retrain: the window's newest days held out of training and scored after every epoch; the "
        "candidate is the epoch with the lowest validation log loss (the test files stay the release gate). "
        "0: train on every day, keep the last epoch."))
    shuffle_chunks: int = Field(default=_DEFAULT.shuffle_chunks, gt=0, description=(
        "Full retrain: processed chunks (of different days) pooled and shuffled together; each epoch visits "
        "the window's chunks in a seeded order of its own."))
    checkpoint_every_chunks: int = Field(default=_DEFAULT.checkpoint_every_chunks, gt=0, description=(
        "Save the unfinished run every this many chunks (and at the end of every day)."))
    restart: bool = Field(default=_DEFAULT.restart, description=(
        "Discard an unfinished run instead of resuming it, and start from the model of record."))

    def to_train_config(self) -> TrainConfig:
        return TrainConfig(mode=self.mode, hidden=(self.hidden1, self.hidden2), lr=self.lr,
                           batch_size=self.batch_size, epochs=self.epochs, window_start=self.window_start,
                           window_end=self.window_end, seed=self.seed, threads=self.threads,
                           checkpoint_every_chunks=self.checkpoint_every_chunks, restart=self.restart,
                           shuffle_chunks=self.shuffle_chunks, validation_days=self.validation_days)


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def _observe_day(context: dg.AssetExecutionContext, numbers: dict) -> None:
    """One observation of click_model per trained day, as it finishes: the Plots tab draws the
    learning curve one point per day (a materialization's metadata would put every day at one time)."""
    context.log_event(dg.AssetObservation(
        "click_model", description=f"trained on {numbers['day']} (epoch {numbers['epoch']})",
        metadata={"trained_day": numbers["day"], "epoch": numbers["epoch"],  # day_*: apart from the run's totals
                  **{f"day_{k}": v for k, v in numbers.items() if k not in ("day", "epoch")}}))


def _selection_metadata(report) -> dict:
    """The selected epoch's validation scores, and every epoch's (full retrains with validation days)."""
    if not report.validation:
        return {}
    chosen = next(v for v in report.validation if v["epoch"] == report.selected_epoch)
    return {"selected_epoch": report.selected_epoch,
            **{k: v for k, v in chosen.items() if k.startswith("validation_") and k != "validation_rows"},
            "validation_rows": chosen["validation_rows"],
            "validation_by_epoch": dg.MetadataValue.json(report.validation)}


def _training_metadata(result: TrainResult) -> dict:
    report, state = result.report, result.state
    return {
        "rows_trained": report.rows, "partitions_trained": len(report.days),
        "partitions_in_model": len(state.trained) if state else 0,
        "rows_in_model": sum(state.trained.values()) if state else 0,
        "seconds": round(report.seconds, 3), "rows_per_s": round(report.rows_per_s, 1),
        "epochs": len(report.epoch_seconds),
        "epoch_seconds": dg.MetadataValue.json([round(s, 3) for s in report.epoch_seconds]),
        "epoch_seconds_max": round(max(report.epoch_seconds, default=0.0), 3),
        "train_loss": report.mean_loss, "steps": state.steps if state else 0, "resumed": int(report.resumed),
        "prequential_accuracy": _mean(report.prequential, "prequential_accuracy"),
        "prequential_auc": _mean(report.prequential, "prequential_auc"),
        "prequential_log_loss": _mean(report.prequential, "prequential_log_loss"),
        **report.threads, **_selection_metadata(report), "mode": report.mode, "training_kernel": report.kernel,
        "days_trained": dg.MetadataValue.json(sorted(set(report.days))),
        "prequential_by_day": dg.MetadataValue.json(report.prequential),
        "feature_versions": dg.MetadataValue.json(state.versions if state else {}),
    }


def _comparison_metadata(evaluation: dict) -> dict:
    """The champion's figures on the same data, and each comparison, when there was a champion."""
    champion = evaluation.get("champion")
    if not champion:
        return {}
    rows = evaluation.get("comparison", [])
    return {"champion_version": champion["version"],
            **{f"champion_{k}": v for k, v in champion.items() if isinstance(v, int | float)},
            "comparison": dg.MetadataValue.md(
                "| metric | candidate | champion | change | margin | verdict |\n|---|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {r['metric']} | {r['candidate']:.4f} | {r['champion']:.4f} | {r['change']:+.4f} | "
                    f"{r['margin']:g} | {'worse' if r['worse'] else ('ok' if r['compared'] else r['note'])} |"
                    for r in rows))}


def _evaluation_metadata(evaluation: dict) -> dict:
    calibration = evaluation["calibration"]
    return {**{k: evaluation[k] for k in ("calibration_error", "ndcg_at_5", "ndcg_at_10", "user_auc", "logged_rows",
                                          "logged_requests_with_clicks") if k in evaluation},
            **_comparison_metadata(evaluation),
        "accuracy": evaluation["accuracy"], "auc": evaluation["auc"], "log_loss": evaluation["log_loss"],
        "rows": evaluation["rows"], "dagster/row_count": evaluation["rows"],
        "all_zeros_accuracy": evaluation["all_zeros_accuracy"],
        "dropped_rows": sum(evaluation["dropped"].values()),
        "calibration_plot": picture(calibration_svg(calibration), "calibration"),
        "calibration": dg.MetadataValue.md(
            "| probability | rows | mean predicted | observed rate |\n|---|---|---|---|\n" + "\n".join(
                f"| {r['bin']} | {r['rows']} | {r['mean_predicted']:.4f} | {r['observed_rate']:.4f} |"
                for r in calibration)),
    }


@dg.multi_asset(
    specs=[dg.AssetSpec("click_model", group_name="model", kinds={"pytorch"}, owners=[OWNER], code_version="3",
                        automation_condition=TRAINS_ON_NEW_DAYS, freshness_policy=MODEL_FRESHNESS,
                        deps=[processed_clicks, "user_features", "restaurant_features"],
                        description="The click model of record (40→256→128→1, Adam): trained incrementally on "
                                    "new processed days or fully retrained over a window; its checkpoint "
                                    "records every partition and the feature versions it was trained on."),
           dg.AssetSpec("model_evaluation", group_name="model", kinds={"pytorch"}, deps=["click_model"],
                        owners=[OWNER], code_version="2", automation_condition=EVALUATED_WITH_THE_MODEL,
                        description="The model of record scored on the held-out test files: accuracy "
                                    "(threshold 0.5), ROC AUC, log loss and a calibration table.")],
    check_specs=check_specs("click_model", {
        FINITE_CHECK: "every weight of the candidate is finite",
        NOT_RETIRED_CHECK: "the run would not recreate a retired model (same parent, days and settings); "
                           "checked before training"})
    + check_specs("model_evaluation", {
        ACCURACY_CHECK: f"held-out accuracy of the candidate ≥ {ACCURACY_BAR} (the reference's bar); below it "
                        f"nothing is published",
        COMPARISON_CHECK: "no metric of the candidate worse than the champion's beyond its margin, both scored in "
                          "this step on the test files and the held-out logged lists (docs/OPERATIONS.md, "
                          "\"Releasing a model\"); otherwise it is recorded as rejected and serves no one"}),
    pool="click_model_checkpoint", can_subset=False)
def click_model(context: dg.AssetExecutionContext, config: ClickModelConfig, source: SourceResource,
                warehouse: WarehouseResource):
    """Train a candidate; evaluate it and the champion on the same held-out data; publish it as the
    champion (the first model) or the challenger if it passes, else record it as rejected."""
    layout = warehouse.layout()
    with tempfile.TemporaryDirectory(prefix="test-") as scratch:
        test_files = source.open().test_files(Path(scratch))
        result = yield from published_or_failed(
            lambda: train(layout, config.to_train_config(), log=context.log.info,
                          gate=release_gate(layout, test_files, ACCURACY_CHECK),
                          on_day=lambda d: _observe_day(context, d), by=f"dagster run {context.run.run_id[:8]}"),
            assets={FINITE_CHECK: "click_model", NOT_RETIRED_CHECK: "click_model",
                    ACCURACY_CHECK: "model_evaluation", COMPARISON_CHECK: "model_evaluation"})
    published = result.published
    if published is None:
        if result.state is None:
            raise dg.Failure("nothing to train: no processed days and no model of record "
                             "(materialize processed_clicks first)")
        context.log.info("no new processed days: nothing trained; the model of record is unchanged")
        published = Artifact(layout.checkpoint).current()
    evaluation = published.read_json(EVALUATION_FILE)
    roles = Registry(layout.registry).roles()
    role = roles.role_of(published.version)
    mirrored = mlflow_mirror.mirror(SETTINGS.release.mlflow_tracking_uri, context.log.warning)
    if mirrored is not None and result.published is not None:
        mirrored.log_training(published.version, config.model_dump(), result.report.prequential, summary(evaluation),
                              {"lineage": published.record.get("lineage", ""), "role": role,
                               "mode": result.report.mode})
        mirrored.mirror_roles(roles)
    yield dg.MaterializeResult(asset_key="click_model",
                               metadata={**_training_metadata(result), **published_metadata(published), "role": role},
                               data_version=dg.DataVersion(published.version),
                               check_results=check_results(
                                   [*published.audits, AuditResult(NOT_RETIRED_CHECK, True)], "click_model",
                                   [FINITE_CHECK, NOT_RETIRED_CHECK]))
    yield dg.MaterializeResult(asset_key="model_evaluation",
                               metadata={**_evaluation_metadata(evaluation), "model_version": published.version,
                                         "role": role},
                               data_version=dg.DataVersion(published.version),
                               check_results=check_results(published.audits, "model_evaluation",
                                                           [ACCURACY_CHECK, COMPARISON_CHECK]))


def _export_metadata(record: dict) -> dict:
    """The served format, and each format's measured p50/p99 per request size."""
    latency = {f"{fmt}_{q}_ms_{n}": numbers["latency"][str(n)][f"{q}_ms"]
               for fmt, numbers in record.get("formats", {}).items() if "latency" in numbers
               for n in LATENCY_ROWS if str(n) in numbers["latency"] for q in ("p50", "p99")}
    return {"served_format": record.get("serve", "torchscript"), **latency}


@dg.asset(group_name="model", kinds={"pytorch", "onnx"}, deps=["model_evaluation", "click_model"],
          pool="model_export", owners=[OWNER], code_version="5", automation_condition=FOLLOWS_PARENTS,
          check_specs=check_specs("model_exports", {check: (
              f"fresh-process {fmt.replace('_', ' ')} logits within {PARITY_TOLERANCE} × max(1, |logit|) of the "
              f"unfolded eager model; checked on the candidate before it is published")
              for fmt, check in PARITY_CHECKS.items()}))
def model_exports(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """The champion's and the challenger's models, each with its first two layers multiplied out
    (no activation separates them), exported three times: TorchScript (``model.pt``), a torch.export
    ExportedProgram (``model.pt2``) and ONNX (``model.onnx``, for ONNX Runtime or any runtime that
    takes ONNX; its inputs are the user's features and the restaurants' apart, so a request's user
    is multiplied once), each with a dynamic batch. Each is loaded and checked against the unfolded
    eager model in a fresh process that does not import this project, as rows and as one user
    against many restaurants, and timed on requests of 20, 70 and 1,000 restaurants; a version is
    published only if all match, with the checkpoint and feature versions it pairs with, and names
    the fastest format, which the API serves. The live export is the champion's (every user); the
    challenger's is kept beside it for shadow scoring and the canary. A role's existing export of
    the same export revision is kept as it is."""
    layout = warehouse.layout()
    if current_roles(layout).champion is None:
        raise dg.Failure("no champion: materialize click_model first")
    roles, made, switched = yield from published_or_failed(lambda: export_roles(
        layout, SETTINGS.publishing.export_verify_timeout_s, context.log.info))
    if switched:
        context.log.info(f"the served export follows the roles: {switched}")
    mirrored = mlflow_mirror.mirror(SETTINGS.release.mlflow_tracking_uri, context.log.warning)
    if mirrored is not None:
        for made_export in made.values():
            mirrored.log_export(made_export.record["checkpoint_version"], made_export.path)
        mirrored.mirror_roles(roles)
    published = Artifact(layout.export).current()
    parity = {}
    if "champion" in made:
        verified = made["champion"].written
        parity = {"max_abs_diff": max(f["max_abs_diff"] for f in verified["formats"].values()),
                  "parity_difference": max(f["parity_difference"] for f in verified["formats"].values()),
                  "one_user_parity_difference": max(f["one_user_parity_difference"]
                                                    for f in verified["formats"].values())}
    challenger_export = export_of(Artifact(layout.export), roles.challenger) if roles.challenger else None
    yield dg.MaterializeResult(
        metadata={**published_metadata(published), "bytes": published.bytes, **_export_metadata(published.record),
                  **parity, "checkpoint_version": published.record["checkpoint_version"],
                  "champion": roles.champion, "challenger": roles.challenger or "",
                  "challenger_export": challenger_export or "", "exported_now": len(made),
                  "feature_versions": dg.MetadataValue.json(published.record.get("feature_versions", {}))},
        data_version=dg.DataVersion(f"{published.version}+{challenger_export or ''}"),
        check_results=check_results(published.audits))
