"""Where a training run starts: the unfinished run resumed, or a new run planned.

An unfinished run continues where it stands, on the feature snapshots and partition versions it
validated when it was planned, provided it was asked for with the same settings. A new run starts
incrementally from the model of record (a fresh model when none is published), or, for a full
retrain, from a fresh model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.data.layout import Warehouse
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import Cursor, TrainingState, load_published_state, load_unfinished_run
from pipeline.model.network import ClickMLP, make_optimizer
from pipeline.model.training.config import TrainConfig
from pipeline.model.training.partitions import checked_manifests, resolve_partitions
from pipeline.model.training.plan import build_plan, fingerprint, full_retrain_window
from pipeline.publish import Artifact


@dataclass
class RunStart:
    """What a run trains from: the feature tables, the state and its cursor (``state.cursor``), the
    model and optimizer it holds, and each planned or held-out day's partition version directory
    and manifest."""

    tables: FeatureTables
    discarded_unfinished: bool
    resumed: bool
    state: TrainingState
    cursor: Cursor
    model: ClickMLP
    optimizer: torch.optim.Adam
    dirs: dict[str, Path]
    manifests: dict[str, dict]


@dataclass
class NothingToTrain:
    """No unfinished run, and no processed day the model of record has not been trained on."""

    discarded_unfinished: bool


def start_run(warehouse: Warehouse, config: TrainConfig, run_path: Path,
              log: Callable[[str], None]) -> RunStart | NothingToTrain:
    """The unfinished run at ``run_path`` (discarded first with ``config.restart``), else a new
    run planned over the processed days; ValueError when an unfinished run was started with other
    settings."""
    discarded = False
    if config.restart and run_path.exists():  # before reading it: an unreadable run is discarded too
        run_path.unlink()
        discarded = True
        log("restart: discarded the unfinished run; starting from the published checkpoint")
    unfinished = load_unfinished_run(run_path)
    if unfinished is not None:
        return _resume(warehouse, config, run_path, *unfinished)
    return _plan_new_run(warehouse, config, discarded)


def _resume(warehouse: Warehouse, config: TrainConfig, run_path: Path, state: TrainingState,
            cursor: Cursor) -> RunStart:
    if cursor.fingerprint != fingerprint(config, cursor.plan, state.versions, cursor.validation):
        raise ValueError(
            f"{run_path} holds an unfinished {cursor.mode} run (step {cursor.position + 1} of "
            f"{len(cursor.plan)}) with other settings: re-run with the same config, or set restart=true")
    tables = FeatureTables.load(warehouse, state.versions)  # the snapshots the run started on
    model, optimizer = _restore(state, config)
    dirs = resolve_partitions(warehouse, {d for _, pieces in cursor.plan for d, _ in pieces} | set(cursor.validation),
                              cursor.partitions)
    return RunStart(tables, False, True, state, cursor, model, optimizer, dirs, checked_manifests(dirs, tables))


def _plan_new_run(warehouse: Warehouse, config: TrainConfig, discarded: bool) -> RunStart | NothingToTrain:
    days = warehouse.processed_days()
    tables = FeatureTables.load(warehouse)
    incumbent = load_published_state(warehouse.checkpoint)
    validation: list[str] = []
    parent = ""
    if config.mode == "incremental" and incumbent is not None:
        state = incumbent
        parent = Artifact(warehouse.checkpoint).live_version() or ""
        model, optimizer = _restore(state, config)
        window = [d for d in days if d not in state.trained]
    else:
        model, optimizer, state = _fresh_state(config)
        window, validation = (days, []) if config.mode == "incremental" else full_retrain_window(config, days)
    dirs = resolve_partitions(warehouse, set(window) | set(validation), {})
    manifests = checked_manifests(dirs, tables)
    plan = build_plan(config, window, {d: len(m["chunks"]) for d, m in manifests.items()})
    if not plan:
        return NothingToTrain(discarded)
    state.versions = tables.versions()
    state.cursor = cursor = Cursor(config.mode, plan, validation=validation,
                                   fingerprint=fingerprint(config, plan, state.versions, validation),
                                   partitions={day: directory.name for day, directory in dirs.items()},
                                   parent=parent)
    return RunStart(tables, discarded, False, state, cursor, model, optimizer, dirs, manifests)


def _fresh_state(config: TrainConfig) -> tuple[ClickMLP, torch.optim.Adam, TrainingState]:
    torch.manual_seed(config.seed)
    model = ClickMLP(config.hidden)
    optimizer = make_optimizer(model, config.lr)
    return model, optimizer, TrainingState(model.state_dict(), optimizer.state_dict(), config.architecture())


def _restore(state: TrainingState, config: TrainConfig) -> tuple[ClickMLP, torch.optim.Adam]:
    if state.hparams != config.architecture():
        raise ValueError(f"the checkpoint's architecture {state.hparams} differs from the config's "
                         f"{config.architecture()}: train it with mode=full")
    model = ClickMLP(tuple(state.hparams["hidden"]))
    model.load_state_dict(state.model)
    optimizer = make_optimizer(model, config.lr)
    optimizer.load_state_dict(state.optimizer)
    for group in optimizer.param_groups:
        group["lr"] = config.lr
    return model, optimizer
