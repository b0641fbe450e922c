"""Incremental and full training over processed click partitions, resumable at chunk granularity.

- incremental: warm-start from the checkpoint and train once on every processed day it has not
  been trained on (a fresh model when there is no checkpoint);
- full: a fresh model trained on every day of a window for N epochs (every row every epoch).

In incremental mode each new day is scored before it is trained on (prequential accuracy, AUC,
log loss); a full retrain starts from scratch, so it has no "new" day to score (model_evaluation
scores the held-out files after either). A
checkpoint with a cursor is written atomically every few chunks and at the end of every day, so a
run killed at any moment and started again continues where the checkpoint stands and trains every
(epoch, day, chunk) exactly once — with the same result as a run that was never killed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.data.clicks import iter_chunks, read_manifest
from pipeline.data.layout import Warehouse
from pipeline.model import metrics
from pipeline.model.batches import BatchGatherer, FeatureTables, chunk_generator
from pipeline.model.checkpoint import Cursor, TrainingState
from pipeline.model.network import ClickMLP, FusedTrainer, fused_logits, make_optimizer

MODES = ("incremental", "full")


@dataclass(frozen=True)
class TrainConfig:
    mode: str = "incremental"
    hidden: tuple[int, int] = (256, 128)
    lr: float = 2e-3
    batch_size: int = 8192
    epochs: int = 1
    window_start: str | None = None
    window_end: str | None = None
    seed: int = 0
    threads: int = 2  # measured: usually faster than 1 for training here (docs/PERFORMANCE.md)
    checkpoint_every_chunks: int = 4
    restart: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("lr", "batch_size", "epochs", "threads", "checkpoint_every_chunks"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def architecture(self) -> dict:
        return {"hidden": list(self.hidden)}


@dataclass
class TrainReport:
    mode: str
    resumed: bool
    days: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    mean_loss: float = float("nan")
    prequential: list[dict] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    """Logs %, rows/s and ETA at most every ``every`` seconds."""

    def __init__(self, total_rows: int, log: Callable[[str], None], every: float = 10.0):
        self.total, self.log, self.every = max(total_rows, 1), log, every
        self.done, self.started, self.last = 0, time.perf_counter(), time.perf_counter()

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            rate = self.done / (now - self.started)
            eta = (self.total - self.done) / rate if rate else float("inf")
            self.log(f"training {self.done / self.total:.1%} ({self.done:,}/{self.total:,} rows), "
                     f"{rate:,.0f} rows/s, ETA {eta:.0f} s")


def _fingerprint(config: TrainConfig, plan: list[tuple[int, str]]) -> str:
    key = json.dumps([config.mode, config.architecture(), config.lr, config.batch_size, config.seed, plan])
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _window(days: list[str], config: TrainConfig) -> list[str]:
    return [d for d in days if (config.window_start is None or d >= config.window_start)
            and (config.window_end is None or d <= config.window_end)]


def _fresh_state(config: TrainConfig) -> tuple[ClickMLP, torch.optim.Optimizer, TrainingState]:
    torch.manual_seed(config.seed)
    model = ClickMLP(tuple(config.hidden))
    optimizer = make_optimizer(model, config.lr)
    return model, optimizer, TrainingState(model.state_dict(), optimizer.state_dict(),
                                           config.architecture())


def _restore(state: TrainingState, config: TrainConfig) -> tuple[ClickMLP, torch.optim.Optimizer]:
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


def _check_ids_versions(warehouse: Warehouse, days: set[str], tables: FeatureTables) -> dict[str, dict]:
    manifests, stale = {}, []
    versions = tables.versions()
    for day in sorted(days):
        manifest = manifests[day] = read_manifest(warehouse.processed_clicks(day))
        if (manifest.get("users_ids_version"), manifest.get("restaurants_ids_version")) != (
                versions["users_ids"], versions["restaurants_ids"]):
            stale.append(day)
    if stale:
        raise ValueError(f"processed partitions {stale} were resolved against other feature ids than the "
                         f"current snapshots: re-materialize processed_clicks for them")
    return manifests


def score_partition(model: ClickMLP, gatherer: BatchGatherer, partition_dir: Path) -> dict:
    """Accuracy, AUC and log loss of the model on one processed partition."""
    logits, clicks = [], []
    for user_row, restaurant_row, click in iter_chunks(partition_dir):
        for x, y in gatherer.batches(user_row, restaurant_row, click):
            logits.append(fused_logits(model, x).numpy().copy())
            clicks.append(y.numpy().copy())
    if not logits:
        return metrics.summary(np.empty(0), np.empty(0))
    return metrics.summary(np.concatenate(logits), np.concatenate(clicks))


def train(warehouse: Warehouse, checkpoint: Path, config: TrainConfig,
          log: Callable[[str], None] = print) -> tuple[TrainingState, TrainReport]:
    """Run (or resume) training as ``config`` says; return the final state and what was done."""
    torch.set_num_threads(config.threads)
    tables = FeatureTables.load(warehouse)
    days = warehouse.processed_days()
    state = TrainingState.load(checkpoint)
    resumed = bool(state and state.cursor and not config.restart)
    if resumed:
        cursor = state.cursor
        if cursor.fingerprint != _fingerprint(config, cursor.plan):
            raise ValueError(
                f"{checkpoint} holds an unfinished {cursor.mode} run (step {cursor.position + 1} of "
                f"{len(cursor.plan)}) with other settings: re-run with the same config, or set restart=true")
        model, optimizer = _restore(state, config)
    elif config.mode == "incremental" and state is not None:
        model, optimizer = _restore(state, config)
        plan = [(0, d) for d in days if d not in state.trained]
        state.cursor = Cursor("incremental", plan, fingerprint=_fingerprint(config, plan))
    else:
        model, optimizer, state = _fresh_state(config)
        window = days if config.mode == "incremental" else _window(days, config)
        plan = [(epoch, d) for epoch in range(config.epochs if config.mode == "full" else 1) for d in window]
        state.cursor = Cursor(config.mode, plan, fingerprint=_fingerprint(config, plan))
    cursor = state.cursor
    manifests = _check_ids_versions(warehouse, {d for _, d in cursor.plan[cursor.position:]}, tables)
    report = TrainReport(cursor.mode, resumed)
    remaining = sum(manifests[d]["rows"] for _, d in cursor.plan[cursor.position:])
    progress = _Progress(remaining, log)
    trainer, gatherer = FusedTrainer(model, optimizer), BatchGatherer(tables, config.batch_size)
    log(f"{'resuming' if resumed else 'starting'} {cursor.mode} training: {len(cursor.plan) - cursor.position} "
        f"(epoch, day) steps, {remaining:,} rows")

    def save() -> None:
        state.model, state.optimizer = model.state_dict(), optimizer.state_dict()
        state.save(checkpoint)

    started = epoch_started = time.perf_counter()
    losses = []
    while cursor.position < len(cursor.plan):
        epoch, day = cursor.plan[cursor.position]
        partition = warehouse.processed_clicks(day)
        if cursor.mode == "incremental" and cursor.chunk == 0:
            cursor.pending = {"day": day, **{f"prequential_{k}": v for k, v in
                                             score_partition(model, gatherer, partition).items()}}
        chunks = read_manifest(partition)["chunks"]
        for index, (user_row, restaurant_row, click) in enumerate(iter_chunks(partition)):
            if index < cursor.chunk:
                continue
            generator = chunk_generator(config.seed, epoch, day, index)
            for x, clicks in gatherer.batches(user_row, restaurant_row, click, generator):
                losses.append(trainer.step(x, clicks))
                state.steps += 1
            state.rows_seen += len(click)
            report.rows += len(click)
            progress.add(len(click))
            cursor.chunk = index + 1
            if cursor.chunk % config.checkpoint_every_chunks == 0 and cursor.chunk < len(chunks):
                save()
        if cursor.pending is not None:
            state.history.append(cursor.pending)
            report.prequential.append(cursor.pending)
        if cursor.mode == "incremental":
            state.trained[day] = manifests[day]["rows"]
        report.days.append(day)
        cursor.position, cursor.chunk, cursor.pending = cursor.position + 1, 0, None
        next_epoch = cursor.plan[cursor.position][0] if cursor.position < len(cursor.plan) else None
        if next_epoch != epoch:
            now = time.perf_counter()
            report.epoch_seconds.append(now - epoch_started)
            epoch_started = now
            log(f"epoch {epoch} done in {report.epoch_seconds[-1]:.1f} s")
        if cursor.position == len(cursor.plan):
            if cursor.mode == "full":
                state.trained = {d: manifests[d]["rows"] for _, d in cursor.plan}
            state.versions = tables.versions()
            state.cursor = None
        save()
    report.seconds = time.perf_counter() - started
    report.mean_loss = float(np.mean(losses)) if losses else float("nan")
    state.cursor = None
    if not report.days:
        save()  # nothing was left to train: still drop a discarded (restart) cursor from the file
    return state, report


def load_model(checkpoint: Path) -> tuple[ClickMLP, TrainingState]:
    """The trained model of a checkpoint (refuses one whose run is unfinished)."""
    state = TrainingState.load(checkpoint)
    if state is None:
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: materialize click_model first")
    if state.cursor is not None:
        raise ValueError(f"{checkpoint} holds an unfinished {state.cursor.mode} run: finish it first")
    model = ClickMLP(tuple(state.hparams["hidden"]))
    model.load_state_dict(state.model)
    return model.eval(), state
