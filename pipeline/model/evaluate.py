"""Evaluation of a model on held-out raw click files (the reference's test files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.audits import AuditResult
from pipeline.data.raw_clicks import DROP_REASONS, iter_raw_batches, resolve_batch
from pipeline.model import metrics
from pipeline.model.batches import BatchGatherer, FeatureTables
from pipeline.model.network import ClickMLP, fused_logits

EVAL_BATCH = 65_536
ACCURACY_BAR = 0.7  # the reference's bar for test accuracy


def score_into(stream: metrics.MetricStream, model: ClickMLP, gatherer: BatchGatherer, user_row: np.ndarray,
               restaurant_row: np.ndarray, click: np.ndarray) -> None:
    """Score rows (snapshot row numbers and clicks) batch by batch into ``stream``."""
    for x, y in gatherer.batches(user_row, restaurant_row, click):
        stream.add(fused_logits(model, x).numpy(), y.numpy())


def evaluate_files(model: ClickMLP, files: Sequence[Path], tables: FeatureTables) -> dict:
    """Accuracy (threshold 0.5), AUC, log loss and a calibration table on raw click files, read
    and scored batch by batch (:class:`~pipeline.model.metrics.MetricStream`).

    Rows the snapshots cannot resolve are dropped and counted, as in processing.
    """
    users, restaurants = tables.user_snapshot.index, tables.restaurant_snapshot.index
    dropped = dict.fromkeys(DROP_REASONS, 0)
    gatherer = BatchGatherer(tables, EVAL_BATCH)
    stream = metrics.MetricStream()
    for batch in iter_raw_batches(files):
        score_into(stream, model, gatherer, *resolve_batch(batch, users, restaurants, dropped))
    return {**stream.summary(), "click_rate": stream.click_rate(), "all_zeros_accuracy": 1 - stream.click_rate(),
            "dropped": dropped, "calibration": stream.calibration()}


def accuracy_audit(evaluation: dict, files: Sequence[Path], check_name: str, bar: float = ACCURACY_BAR
                   ) -> AuditResult:
    """The absolute bar: held-out accuracy of ``evaluation`` (on ``files``) at least ``bar``."""
    accuracy = evaluation["accuracy"]
    passed = bool(accuracy >= bar)
    why = "" if passed else (f"held-out accuracy {accuracy:.4f} < {bar} on {evaluation['rows']} rows of "
                             f"{', '.join(Path(f).name for f in files)}")
    return AuditResult(check_name, passed, {"accuracy": accuracy, "bar": bar,
                                            "all_zeros_accuracy": evaluation["all_zeros_accuracy"]}, why)


def accuracy_gate(files: Sequence[Path], check_name: str, bar: float = ACCURACY_BAR):
    """A release gate for :func:`pipeline.model.training.train`: the candidate's accuracy on the
    held-out ``files`` must reach ``bar``; the evaluation is stored with the checkpoint."""

    def gate(model: ClickMLP, tables: FeatureTables) -> tuple[list[AuditResult], dict]:
        evaluation = evaluate_files(model, files, tables)
        return [accuracy_audit(evaluation, files, check_name, bar)], evaluation

    return gate
