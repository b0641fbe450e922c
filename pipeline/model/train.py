"""Incremental and full training over processed click partitions, resumable at chunk granularity.

- incremental: warm-start from the published checkpoint (the model of record) and train once on
  every processed day it has not been trained on (a fresh model when none is published);
- full: a fresh model trained on every day of a window for N epochs (every row every epoch).

Incremental training walks the new days in order, chunk by chunk, and scores each day before it
trains on it (prequential accuracy, AUC, log loss): that order is the point. A full retrain starts
from scratch, so nothing needs an order: each epoch visits the window's (day, chunk) pieces in a
seeded permutation of its own, ``shuffle_chunks`` of them pooled and shuffled together, so batches
mix days and no epoch ends on the newest day. The plan, permutations included, is part of the
unfinished run's cursor.

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
from pipeline.data.clicks import iter_chunks, live_partition, read_chunk, read_manifest
from pipeline.data.layout import Warehouse, parse_day
from pipeline.disk_space import ensure_room
from pipeline.model import metrics
from pipeline.model.batches import BatchGatherer, FeatureTables, seeded_generator
from pipeline.model.checkpoint import (
    CHECKPOINT_FILE,
    Cursor,
    TrainingState,
    load_published_state,
    load_unfinished_run,
)
from pipeline.model.evaluate import score_into
from pipeline.model.network import ClickMLP, FusedTrainer, make_optimizer
from pipeline.model.threads import ThreadTuner
from pipeline.publish import DEFAULT_LOCK_TIMEOUT_S, Artifact, AuditResult, Published, Rejected

MODES = ("incremental", "full")
REFERENCE_CONSTRAINTS = {"mode": "full", "lr": 1e-8, "epochs": 5, "batch_size": 1024, "validation_days": 0}
"""The assignment's training settings (Adam, the reference architecture, every row of every day
every epoch, so no day held out): deploy/run_configs/reference_constraints.yaml and
``bench/training.py --reference-constraints``."""


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
    threads: int = 0  # 0: the faster of 1 and 2, measured as it trains (pipeline.model.threads)
    checkpoint_every_chunks: int = 4
    restart: bool = False
    shuffle_chunks: int = 4
    validation_days: int = 1  # full mode: the window's newest days, held out for model selection

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        sizes = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs,
                 "checkpoint_every_chunks": self.checkpoint_every_chunks, "shuffle_chunks": self.shuffle_chunks,
                 "hidden": min(self.hidden)}
        for name, value in sizes.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("threads", "validation_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or positive, got {getattr(self, name)}")
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
    threads: dict[str, float] = field(default_factory=dict)
    kernel: str = ""  # FusedTrainer.kernel: "native", or "torch (why)"
    validation: list[dict] = field(default_factory=list)  # per epoch, full mode with validation days
    selected_epoch: int | None = None

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


Plan = list[tuple[int, tuple[tuple[str, int], ...]]]
"""(epoch, pieces) steps; a piece is (day, chunk). Incremental: one day's chunks per step, in
order; full: ``shuffle_chunks`` pieces of a permuted epoch per step, pooled."""


def _fingerprint(config: TrainConfig, plan: Plan, versions: dict[str, str], validation: list[str]) -> str:
    key = json.dumps([config.mode, config.architecture(), config.lr, config.batch_size, config.seed,
                      config.shuffle_chunks, plan, sorted(versions.items()), validation])
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _window(days: list[str], config: TrainConfig) -> list[str]:
    return [d for d in days if (config.window_start is None or d >= config.window_start)
            and (config.window_end is None or d <= config.window_end)]


def _plan(config: TrainConfig, days: list[str], chunks: dict[str, int]) -> Plan:
    """Incremental: the days in order. Full: per epoch, a seeded permutation of every (day, chunk)
    of the window, cut into pools of ``shuffle_chunks``."""
    if config.mode == "incremental":
        return [(0, tuple((day, c) for c in range(chunks[day]))) for day in days]
    pieces = [(day, c) for day in days for c in range(chunks[day])]
    plan = []
    for epoch in range(config.epochs):
        order = torch.randperm(len(pieces), generator=seeded_generator(config.seed, "plan", epoch)).tolist()
        shuffled = [pieces[i] for i in order]
        plan += [(epoch, tuple(shuffled[i:i + config.shuffle_chunks]))
                 for i in range(0, len(shuffled), config.shuffle_chunks)]
    return plan


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


def _resolve_partitions(warehouse: Warehouse, days: set[str], pinned: dict[str, str]) -> dict[str, Path]:
    """Each day's processed partition version directory, resolved once for the whole run: the
    version ``pinned`` (the one a resumed run validated), else the live one."""
    dirs = {}
    for day in sorted(days):
        if day not in pinned:
            dirs[day] = live_partition(warehouse.processed_clicks(day))
            continue
        try:
            dirs[day] = Artifact(warehouse.processed_clicks(day)).version_path(pinned[day])
        except FileNotFoundError as gone:
            raise FileNotFoundError(f"{gone}: the unfinished training run validated that version of {day}, which "
                                    f"was republished since; set restart: true to train on what is live now") from None
    return dirs


def _check_ids_versions(dirs: dict[str, Path], tables: FeatureTables) -> dict[str, dict]:
    """Each partition version's manifest, after checking it was resolved against ``tables``' ids."""
    manifests, stale = {}, []
    versions = tables.versions()
    for day, directory in sorted(dirs.items()):
        manifest = manifests[day] = read_manifest(directory)
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


def score_partitions(model: ClickMLP, gatherer: BatchGatherer, partition_dirs: list[Path]) -> dict:
    """Accuracy, AUC and log loss of the model on processed partitions, batch by batch."""
    stream = metrics.MetricStream()
    for partition_dir in partition_dirs:
        for chunk in iter_chunks(partition_dir):
            score_into(stream, model, gatherer, *chunk)
    return stream.summary()


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
    step's numbers as it finishes: day (a full retrain's pool: its days), epoch, rows, train_loss
    and, incrementally, the day's prequential scores."""
    torch.set_num_threads(config.threads or 1)  # scoring and the gate; training paces its own (ThreadTuner)
    run_path = warehouse.training_run
    artifact = Artifact(warehouse.checkpoint)
    with artifact.lock(lock_timeout_s, on_wait=log):
        leftovers = artifact.remove_leftovers() + remove_stale_temporaries(run_path)
        if leftovers:
            log(f"removed {leftovers} leftovers of killed training writes")
        # before any work: the run's saves and the candidate are each about as large as the model of record
        ensure_room(run_path, 2 * artifact.live_bytes(), "the unfinished run and the candidate checkpoint")
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
    discarded, validation = False, []
    if config.restart and run_path.exists():  # before reading it: an unreadable run is discarded too
        run_path.unlink()
        discarded = True
        log("restart: discarded the unfinished run; starting from the published checkpoint")
    unfinished = load_unfinished_run(run_path)
    if unfinished is not None:
        state, cursor = unfinished, unfinished.cursor
        if cursor.fingerprint != _fingerprint(config, cursor.plan, state.versions, cursor.validation):
            raise ValueError(
                f"{run_path} holds an unfinished {cursor.mode} run (step {cursor.position + 1} of "
                f"{len(cursor.plan)}) with other settings: re-run with the same config, or set restart=true")
        tables = FeatureTables.load(warehouse, state.versions)  # the snapshots the run started on
        model, optimizer = _restore(state, config)
        dirs = _resolve_partitions(warehouse, {d for _, pieces in cursor.plan for d, _ in pieces}
                                   | set(cursor.validation), cursor.partitions)
        manifests = _check_ids_versions(dirs, tables)
    else:
        tables = FeatureTables.load(warehouse)
        incumbent = load_published_state(warehouse.checkpoint)
        if config.mode == "incremental" and incumbent is not None:
            state = incumbent
            model, optimizer = _restore(state, config)
            window = [d for d in days if d not in state.trained]
        else:
            model, optimizer, state = _fresh_state(config)
            window = days if config.mode == "incremental" else _window(days, config)
            span = (f"[{config.window_start or 'first day'}, {config.window_end or 'last day'}]: processed days are "
                    f"{f'{days[0]} to {days[-1]}' if days else 'none'}")
            if config.mode == "full" and not window:
                raise ValueError(f"full retrain over an empty window {span}")
            if config.mode == "full" and len(window) <= config.validation_days:
                raise ValueError(f"full retrain with {config.validation_days} validation day(s) leaves nothing to "
                                 f"train on in the window {span}")
            if config.mode == "full" and config.validation_days:
                window, validation = window[:-config.validation_days], window[-config.validation_days:]
        dirs = _resolve_partitions(warehouse, set(window) | set(validation), {})
        manifests = _check_ids_versions(dirs, tables)
        plan = _plan(config, window, {d: len(m["chunks"]) for d, m in manifests.items()})
        if not plan:
            return None, TrainReport(config.mode, False, discarded_unfinished=discarded), tables
        state.versions = tables.versions()
        state.cursor = Cursor(config.mode, plan, validation=validation,
                              fingerprint=_fingerprint(config, plan, state.versions, validation),
                              partitions={day: directory.name for day, directory in dirs.items()})
    report = TrainReport(state.cursor.mode, unfinished is not None, discarded_unfinished=discarded)
    _train_plan(config, state, model, optimizer, tables, dirs, manifests, run_path, report, log, on_day)
    return state, report, tables


def _train_plan(config: TrainConfig, state: TrainingState, model: ClickMLP, optimizer: torch.optim.Optimizer,
                tables: FeatureTables, dirs: dict[str, Path], manifests: dict[str, dict], run_path: Path,
                report: TrainReport, log: Callable[[str], None],
                on_day: Callable[[dict], None] | None = None) -> None:
    """Train ``state.cursor``'s plan from where it stands; ``dirs``: every planned and held-out
    day's partition version (the one validated: a day republished meanwhile is not read),
    ``manifests``: theirs, checked against ``tables``."""
    cursor = state.cursor
    pieces_rows = {d: [c["rows"] for c in m["chunks"]] for d, m in manifests.items()}
    remaining = sum(pieces_rows[d][c] for _, pieces in cursor.plan[cursor.position:] for d, c in pieces)
    progress = _Progress(remaining, log)
    trainer, gatherer = FusedTrainer(model, optimizer, config.batch_size), BatchGatherer(tables, config.batch_size)
    threads = ThreadTuner(config.threads)
    report.kernel = trainer.kernel
    log(f"{'resuming' if report.resumed else 'starting'} {cursor.mode} training: "
        f"{len(cursor.plan) - cursor.position} steps, {remaining:,} rows; {trainer.kernel} training step")

    def save() -> None:
        state.model, state.optimizer = model.state_dict(), optimizer.state_dict()
        state.save(run_path)

    def train_pool(arrays, generator, where: str, epoch: int) -> tuple[float, int]:
        pool = gatherer.pool(*arrays, generator)
        starts = threads.paced(range(0, len(pool), config.batch_size))
        state.steps += trainer.train_pairs(tables.users, tables.restaurants, pool, starts)
        loss_sum, rows = trainer.take_loss()
        bad = non_finite_parameters(model.state_dict())
        if not math.isfinite(loss_sum) or bad:
            run_path.unlink(missing_ok=True)
            what = f"non-finite weights {bad}" if bad else f"non-finite loss {loss_sum}"
            raise NonFiniteTraining(
                f"{what} while training {where} (epoch {epoch}, step {state.steps}): training stopped without "
                f"saving; the unfinished run was discarded and the published checkpoint is unchanged (check the "
                f"feature snapshots and the learning rate)")
        state.rows_seen += rows
        report.rows += rows
        progress.add(rows)
        return loss_sum, rows

    started = epoch_started = time.perf_counter()
    loss_total, loss_rows = 0.0, 0
    while cursor.position < len(cursor.plan):
        epoch, pieces = cursor.plan[cursor.position]
        days = sorted({d for d, _ in pieces})
        step_loss, step_rows = 0.0, 0
        if cursor.mode == "incremental":  # one day, chronological, scored before it is trained on
            day = days[0]
            partition = dirs[day]  # the version validated, for the whole day
            if cursor.chunk == 0:
                cursor.pending = {"day": day, **{f"prequential_{k}": v for k, v in
                                                 score_partitions(model, gatherer, [partition]).items()}}
            for index in range(cursor.chunk, len(pieces)):  # a resumed day reads only the chunks left
                loss, rows = train_pool(read_chunk(partition, index), seeded_generator(config.seed, epoch, day, index),
                                        f"day {day}, chunk {index}", epoch)
                step_loss, step_rows = step_loss + loss, step_rows + rows
                cursor.chunk = index + 1
                if cursor.chunk % config.checkpoint_every_chunks == 0 and cursor.chunk < len(pieces):
                    save()
            state.history.append(cursor.pending)
            report.prequential.append(cursor.pending)
            state.trained[day] = manifests[day]["rows"]
        else:  # a pool of pieces of several days, shuffled together
            parts = [read_chunk(dirs[d], c) for d, c in pieces]
            arrays = [np.concatenate([part[i] for part in parts], dtype=dtype)
                      for i, dtype in enumerate((np.int32, np.int32, np.float32))]
            del parts
            step_loss, step_rows = train_pool(arrays, seeded_generator(config.seed, epoch, "pool", cursor.position),
                                              "chunks " + ", ".join(f"{d}/{c}" for d, c in pieces), epoch)
            del arrays
        loss_total, loss_rows = loss_total + step_loss, loss_rows + step_rows
        report.days += days
        if on_day is not None:
            on_day({"day": ", ".join(days), "epoch": epoch, "rows": step_rows,
                    "train_loss": step_loss / step_rows if step_rows else float("nan"),
                    **{k: v for k, v in (cursor.pending or {}).items() if k != "day"}})
        cursor.position, cursor.chunk, cursor.pending = cursor.position + 1, 0, None
        next_epoch = cursor.plan[cursor.position][0] if cursor.position < len(cursor.plan) else None
        if next_epoch != epoch:
            now = time.perf_counter()
            report.epoch_seconds.append(now - epoch_started)
            log(f"epoch {epoch} done in {report.epoch_seconds[-1]:.1f} s")
            if cursor.validation:
                _validate(dirs, model, optimizer, gatherer, cursor, epoch, report, log)
            epoch_started = time.perf_counter()
        if cursor.position == len(cursor.plan) and cursor.mode == "full":
            state.trained = {d: manifests[d]["rows"] for _, pieces in cursor.plan for d, _ in pieces}
            if cursor.selection is not None:
                _select(model, optimizer, cursor, log)
        save()  # after every step; at the end of the plan it marks the run complete, unpublished
    report.seconds = time.perf_counter() - started
    report.mean_loss = loss_total / loss_rows if loss_rows else float("nan")
    report.threads = threads.summary()
    report.validation = list(cursor.validations)  # every epoch's, also those before a resume
    report.selected_epoch = cursor.selection["epoch"] if cursor.selection else None


def _cloned(value):
    """``value`` (a state dict, possibly nested) with every tensor copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cloned(v) for v in value)
    return value


def _validate(dirs: dict[str, Path], model: ClickMLP, optimizer: torch.optim.Optimizer, gatherer: BatchGatherer,
              cursor: Cursor, epoch: int, report: TrainReport, log: Callable[[str], None]) -> None:
    """Score the held-out days after an epoch; keep the epoch's weights if its log loss is the best."""
    scores = score_partitions(model, gatherer, [dirs[d] for d in cursor.validation])
    entry = {"epoch": epoch, **{f"validation_{k}": v for k, v in scores.items()}}
    cursor.validations.append(entry)
    log(f"epoch {epoch}: validation accuracy {scores['accuracy']:.4f}, log loss {scores['log_loss']:.5f} "
        f"on {scores['rows']:,} rows of {', '.join(cursor.validation)}")
    best = cursor.selection
    if best is None or scores["log_loss"] < best["validation_log_loss"]:
        cursor.selection = {**entry, "model": _cloned(model.state_dict()), "optimizer": _cloned(optimizer.state_dict())}


def _select(model: ClickMLP, optimizer: torch.optim.Optimizer, cursor: Cursor, log: Callable[[str], None]) -> None:
    """End of a full retrain: the candidate is the epoch with the lowest validation log loss."""
    best, last = cursor.selection, cursor.plan[-1][0]
    if best["epoch"] != last:
        model.load_state_dict(best["model"])
        optimizer.load_state_dict(best["optimizer"])
        log(f"selected epoch {best['epoch']} (validation log loss {best['validation_log_loss']:.5f}), "
            f"not the last, epoch {last}")


FINITE_CHECK = "click_model_is_finite"


def _publish(artifact: Artifact, state: TrainingState, tables: FeatureTables, gate: Gate | None,
             report: TrainReport) -> Published:
    """The finished state as a candidate checkpoint: written, read back, audited (finite weights,
    then the gate on the model as written), published as the model of record."""
    held_out = state.cursor.validation if state.cursor else []
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
        "validation_days": held_out, "validation": report.validation, "selected_epoch": report.selected_epoch,
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
