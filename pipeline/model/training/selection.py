"""Epoch selection of a full retrain with held-out days: the epoch with the lowest validation
log loss is the candidate. The best epoch so far, weights included, is kept in the cursor, so a
resumed run selects as an uninterrupted one would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.model.batches import BatchGatherer
from pipeline.model.checkpoint import Cursor
from pipeline.model.network import ClickMLP
from pipeline.model.training.scoring import score_partitions


def validate_epoch(model: ClickMLP, optimizer: torch.optim.Optimizer, gatherer: BatchGatherer,
                   held_out: list[Path], cursor: Cursor, epoch: int, log: Callable[[str], None]) -> None:
    """Score the held-out partitions after an epoch (kept in ``cursor.validations``); keep the
    epoch's weights in ``cursor.selection`` if its log loss is the best."""
    scores = score_partitions(model, gatherer, held_out)
    entry = {"epoch": epoch, **{f"validation_{k}": v for k, v in scores.items()}}
    cursor.validations.append(entry)
    log(f"epoch {epoch}: validation accuracy {scores['accuracy']:.4f}, log loss {scores['log_loss']:.5f} "
        f"on {scores['rows']:,} rows of {', '.join(cursor.validation)}")
    best = cursor.selection
    if best is None or scores["log_loss"] < best["validation_log_loss"]:
        cursor.selection = {**entry, "model": _cloned(model.state_dict()), "optimizer": _cloned(optimizer.state_dict())}


def select_best_epoch(model: ClickMLP, optimizer: torch.optim.Optimizer, cursor: Cursor,
                      log: Callable[[str], None]) -> None:
    """End of a full retrain: load the selected epoch's weights and optimizer state into
    ``model`` and ``optimizer`` unless it is the last epoch (or none was selected: no held-out days)."""
    best, last = cursor.selection, cursor.plan[-1][0]
    if best is not None and best["epoch"] != last:
        model.load_state_dict(best["model"])
        optimizer.load_state_dict(best["optimizer"])
        log(f"selected epoch {best['epoch']} (validation log loss {best['validation_log_loss']:.5f}), "
            f"not the last, epoch {last}")


def _cloned(value):
    """``value`` (a state dict, possibly nested) with every tensor copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cloned(v) for v in value)
    return value
