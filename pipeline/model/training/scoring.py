"""Checks of a model during training: its scores on processed partitions, and its weights' finiteness."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.data.processed_partition import iter_chunks
from pipeline.model import metrics
from pipeline.model.batches import BatchGatherer
from pipeline.model.evaluate import score_into
from pipeline.model.network import ClickMLP


def score_partitions(model: ClickMLP, gatherer: BatchGatherer, partition_dirs: list[Path]) -> dict:
    """Accuracy, AUC and log loss of the model on processed partitions, batch by batch."""
    stream = metrics.MetricStream()
    for partition_dir in partition_dirs:
        for chunk in iter_chunks(partition_dir):
            score_into(stream, model, gatherer, *chunk)
    return stream.summary()


def non_finite_parameters(model_state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Parameter name → how many of its values are NaN or infinite (only those with any)."""
    counts = {name: int((~torch.isfinite(t)).sum()) for name, t in model_state.items()}
    return {name: n for name, n in counts.items() if n}
