"""Incremental and full training over processed click partitions, resumable at chunk granularity.

- incremental: warm-start from the published checkpoint (the model of record) and train once on
  every processed day it has not been trained on (a fresh model when none is published);
- full: a fresh model trained on every day of a window for N epochs (every row every epoch).

In incremental mode each new day is scored before it is trained on (prequential accuracy, AUC,
log loss); a full retrain starts from scratch, so it has no "new" day to score.

One writer at a time (the checkpoint artifact's lock, held for the whole run). An unfinished run
lives in its own file (``Warehouse.training_run``), saved atomically every few chunks and at the
end of every day, so a run killed at any moment and started again continues where it stands and
trains every (epoch, day, chunk) exactly once, with the same result as a run never killed. The
model of record changes only when a run completes and its candidate passes the audits (finite
weights, and the caller's gate, e.g. accuracy on held-out data); a non-finite loss or weight
stops the run at once, naming the day and chunk, and discards the unfinished run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import remove_stale_temporaries
from pipeline.data.clicks import iter_chunks, live_partition, read_manifest
from pipeline.data.layout import Warehouse, parse_day
from pipeline.model import metrics
from pipeline.model.batches import BatchGatherer, FeatureTables, chunk_generator
from pipeline.model.checkpoint import CHECKPOINT_FILE, Cursor, TrainingState, load_published_state
from pipeline.model.network import ClickMLP, FusedTrainer, fused_logits, make_optimizer
from pipeline.publish import DEFAULT_LOCK_TIMEOUT_S, Artifact, AuditResult, Published, Rejected

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
        sizes = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs, "threads": self.threads,
                 "checkpoint_every_chunks": self.checkpoint_every_chunks, "hidden": min(self.hidden)}
        for name, value in sizes.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("window_start", "window_end"):
            if getattr(self, name) is not None:
                parse_day(getattr(self, name))
        if self.window_start and self.window_end and self.window_start > self.window_end:
            raise ValueError(f"window_start {self.window_start} is after window_end {self.window_end}")

    def architecture(self) -> dict:
        return {"hidden": list(self.hidden)}


class NonFiniteTraining(FloatingPointError):
    """Training produced a NaN or infinite loss or weight; nothing was saved."""


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
    discarded_unfinished: bool = False

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


def _fingerprint(config: TrainConfig, plan: list[tuple[int, str]], versions: dict[str, str]) -> str:
    key = json.dumps([config.mode, config.architecture(), config.lr, config.batch_size, config.seed, plan,
                      sorted(versions.items())])
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
                         f"feature snapshots this run trains on: re-materialize processed_clicks for them")
    return manifests


def non_finite_parameters(model_state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Parameter name → how many of its values are NaN or infinite (only those with any)."""
    counts = {name: int((~torch.isfinite(t)).sum()) for name, t in model_state.items()}
    return {name: n for name, n in counts.items() if n}


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


@dataclass
class TrainResult:
    """A training run's outcome: the model of record after it, what was done, and the version
    published (None when there was nothing new to train on)."""

    state: TrainingState | None
    report: TrainReport
    published: Published | None = None


Gate = Callable[[ClickMLP, FeatureTables], tuple[list[AuditResult], dict]]
"""A release gate: (audits, evaluation to store with the checkpoint) for a candidate model."""


def train(warehouse: Warehouse, config: TrainConfig, log: Callable[[str], None] = print,
          gate: Gate | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
          on_day: Callable[[dict], None] | None = None) -> TrainResult:
    """Run (or resume) training as ``config`` says and publish the result as the model of
    record if it passes its audits; :class:`~pipeline.publish.Rejected` otherwise (the model of
    record stays). A second run waits for the first (the checkpoint's lock). ``on_day`` gets each
    (epoch, day) step's numbers as it finishes: day, epoch, rows, train_loss and, incrementally,
    the day's prequential scores."""
    torch.set_num_threads(config.threads)
    run_path = warehouse.training_run
    artifact = Artifact(warehouse.checkpoint)
    with artifact.lock(lock_timeout_s, on_wait=log):
        leftovers = artifact.remove_leftovers() + remove_stale_temporaries(run_path)
        if leftovers:
            log(f"removed {leftovers} leftovers of killed training writes")
        state, report, tables = _run(warehouse, config, run_path, log, on_day)
        if state is None:
            return TrainResult(load_published_state(warehouse.checkpoint), report)
        try:
            published = _publish(artifact, state, tables, gate, report)
        except Rejected:
            run_path.unlink(missing_ok=True)  # finished and rejected: nothing to resume
            raise
        run_path.unlink(missing_ok=True)
        return TrainResult(state, report, published)


def _run(warehouse: Warehouse, config: TrainConfig, run_path: Path, log: Callable[[str], None],
         on_day: Callable[[dict], None] | None = None) -> tuple[TrainingState | None, TrainReport, FeatureTables]:
    days = warehouse.processed_days()
    unfinished = TrainingState.load(run_path)
    discarded = False
    if unfinished is not None and config.restart:
        run_path.unlink()
        unfinished, discarded = None, True
        log("restart: discarded the unfinished run; starting from the published checkpoint")
    if unfinished is not None:
        state, cursor = unfinished, unfinished.cursor
        if cursor.fingerprint != _fingerprint(config, cursor.plan, state.versions):
            raise ValueError(
                f"{run_path} holds an unfinished {cursor.mode} run (step {cursor.position + 1} of "
                f"{len(cursor.plan)}) with other settings: re-run with the same config, or set restart=true")
        tables = FeatureTables.load(warehouse, state.versions)  # the snapshots the run started on
        model, optimizer = _restore(state, config)
    else:
        tables = FeatureTables.load(warehouse)
        incumbent = load_published_state(warehouse.checkpoint)
        if config.mode == "incremental" and incumbent is not None:
            state = incumbent
            model, optimizer = _restore(state, config)
            plan = [(0, d) for d in days if d not in state.trained]
        else:
            model, optimizer, state = _fresh_state(config)
            window = days if config.mode == "incremental" else _window(days, config)
            if config.mode == "full" and not window:
                raise ValueError(
                    f"full retrain over an empty window [{config.window_start or 'first day'}, "
                    f"{config.window_end or 'last day'}]: processed days are "
                    f"{f'{days[0]} to {days[-1]}' if days else 'none'}")
            plan = [(epoch, d) for epoch in range(config.epochs if config.mode == "full" else 1) for d in window]
        if not plan:
            return None, TrainReport(config.mode, False, discarded_unfinished=discarded), tables
        state.versions = tables.versions()
        state.cursor = Cursor(config.mode, plan, fingerprint=_fingerprint(config, plan, state.versions))
    report = TrainReport(state.cursor.mode, unfinished is not None, discarded_unfinished=discarded)
    _train_plan(warehouse, config, state, model, optimizer, tables, run_path, report, log, on_day)
    return state, report, tables


def _train_plan(warehouse: Warehouse, config: TrainConfig, state: TrainingState, model: ClickMLP,
                optimizer: torch.optim.Optimizer, tables: FeatureTables, run_path: Path,
                report: TrainReport, log: Callable[[str], None],
                on_day: Callable[[dict], None] | None = None) -> None:
    cursor = state.cursor
    manifests = _check_ids_versions(warehouse, {d for _, d in cursor.plan}, tables)
    remaining = sum(manifests[d]["rows"] for _, d in cursor.plan[cursor.position:])
    progress = _Progress(remaining, log)
    trainer, gatherer = FusedTrainer(model, optimizer), BatchGatherer(tables, config.batch_size)
    log(f"{'resuming' if report.resumed else 'starting'} {cursor.mode} training: "
        f"{len(cursor.plan) - cursor.position} (epoch, day) steps, {remaining:,} rows")

    def save() -> None:
        state.model, state.optimizer = model.state_dict(), optimizer.state_dict()
        state.save(run_path)

    def stop(day: str, chunk: int, epoch: int, what: str) -> None:
        run_path.unlink(missing_ok=True)
        raise NonFiniteTraining(
            f"{what} while training day {day}, chunk {chunk} (epoch {epoch}, step {state.steps}): training "
            f"stopped without saving; the unfinished run was discarded and the published checkpoint is "
            f"unchanged (check the feature snapshots and the learning rate)")

    started = epoch_started = time.perf_counter()
    losses = []
    while cursor.position < len(cursor.plan):
        day_losses_from, day_rows_from = len(losses), report.rows
        epoch, day = cursor.plan[cursor.position]
        partition = live_partition(warehouse.processed_clicks(day))  # one version for the whole day
        if cursor.mode == "incremental" and cursor.chunk == 0:
            cursor.pending = {"day": day, **{f"prequential_{k}": v for k, v in
                                             score_partition(model, gatherer, partition).items()}}
        chunks = read_manifest(partition)["chunks"]
        for index, (user_row, restaurant_row, click) in enumerate(iter_chunks(partition)):
            if index < cursor.chunk:
                continue
            generator = chunk_generator(config.seed, epoch, day, index)
            for x, clicks in gatherer.batches(user_row, restaurant_row, click, generator):
                loss = trainer.step(x, clicks)
                if not math.isfinite(loss):
                    stop(day, index, epoch, f"non-finite loss {loss}")
                losses.append(loss)
                state.steps += 1
            if bad := non_finite_parameters(model.state_dict()):
                stop(day, index, epoch, f"non-finite weights {bad}")
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
        if on_day is not None:
            day_losses = losses[day_losses_from:]
            on_day({"day": day, "epoch": epoch, "rows": report.rows - day_rows_from,
                    "train_loss": float(np.mean(day_losses)) if day_losses else float("nan"),
                    **{k: v for k, v in (cursor.pending or {}).items() if k != "day"}})
        cursor.position, cursor.chunk, cursor.pending = cursor.position + 1, 0, None
        next_epoch = cursor.plan[cursor.position][0] if cursor.position < len(cursor.plan) else None
        if next_epoch != epoch:
            now = time.perf_counter()
            report.epoch_seconds.append(now - epoch_started)
            epoch_started = now
            log(f"epoch {epoch} done in {report.epoch_seconds[-1]:.1f} s")
        if cursor.position == len(cursor.plan) and cursor.mode == "full":
            state.trained = {d: manifests[d]["rows"] for _, d in cursor.plan}
        save()  # at the end of every day; at the end of the plan it marks the run complete, unpublished
    report.seconds = time.perf_counter() - started
    report.mean_loss = float(np.mean(losses)) if losses else float("nan")


FINITE_CHECK = "click_model_is_finite"


def _publish(artifact: Artifact, state: TrainingState, tables: FeatureTables, gate: Gate | None,
             report: TrainReport) -> Published:
    """The finished state as a candidate checkpoint: written, read back, audited (finite weights,
    then the gate on the model as written), published as the model of record."""
    state.cursor = None

    def write(staging: Path) -> None:
        state.save(staging / CHECKPOINT_FILE)

    def audit(staging: Path, _) -> list[AuditResult]:
        written = TrainingState.load(staging / CHECKPOINT_FILE)
        bad = non_finite_parameters(written.model)
        audits = [AuditResult(FINITE_CHECK, not bad, {"non_finite_values": sum(bad.values())},
                              f"non-finite values in {bad}" if bad else "")]
        if bad or gate is None:
            return audits
        model = ClickMLP(tuple(written.hparams["hidden"]))
        model.load_state_dict(written.model)
        gate_audits, evaluation = gate(model.eval(), tables)
        (staging / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2))
        return audits + gate_audits

    return artifact.write_audit_publish_locked(write, audit, record={
        "mode": report.mode, "trained_days": sorted(state.trained), "rows_in_model": sum(state.trained.values()),
        "steps": state.steps, "feature_versions": state.versions})


EVALUATION_FILE = "evaluation.json"


def load_model(checkpoint: Path, version: str | None = None) -> tuple[ClickMLP, TrainingState]:
    """The model of record published at ``checkpoint`` (or its kept ``version``)."""
    state = load_published_state(checkpoint, version)
    if state is None:
        raise FileNotFoundError(f"no checkpoint published at {checkpoint}: materialize click_model first")
    model = ClickMLP(tuple(state.hparams["hidden"]))
    model.load_state_dict(state.model)
    return model.eval(), state
