"""A training run under way: its state, the trainer bound to its model, and the pool step both
modes train with.

The state is saved (atomically, to the unfinished run's file) whenever a loop says so; a
non-finite loss or weight stops the run at once, naming where, and discards the unfinished run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.model.batches import BatchGatherer
from pipeline.model.fused_trainer import FusedTrainer, bind_to_flat_buffers
from pipeline.model.threads import ThreadTuner
from pipeline.model.training.config import TrainConfig
from pipeline.model.training.report import NonFiniteTraining, TrainReport
from pipeline.model.training.scoring import non_finite_parameters
from pipeline.model.training.start import RunStart


class TrainingSession:
    """One run's state as its plan is trained: ``state`` and its ``cursor``, the model and optimizer
    (bound to the trainer's flat buffers), the report, and the running loss and epoch clock."""

    def __init__(self, config: TrainConfig, start: RunStart, run_path: Path, log: Callable[[str], None],
                 on_day: Callable[[dict], None] | None = None):
        self.config, self.run_path, self.log, self.on_day = config, run_path, log, on_day
        self.state, self.cursor = start.state, start.cursor
        self.model, self.optimizer = start.model, start.optimizer
        self.tables, self.dirs, self.manifests = start.tables, start.dirs, start.manifests
        self.report = TrainReport(self.cursor.mode, start.resumed, discarded_unfinished=start.discarded_unfinished)
        cursor = self.cursor
        pieces_rows = {d: [c["rows"] for c in m["chunks"]] for d, m in self.manifests.items()}
        remaining = sum(pieces_rows[d][c] for _, pieces in cursor.plan[cursor.position:] for d, c in pieces)
        self.progress = _Progress(remaining, log)
        # from here on the model's parameters and the optimizer's state live in the trainer's buffers
        self.trainer = FusedTrainer(bind_to_flat_buffers(self.model, self.optimizer), config.batch_size)
        self.gatherer = BatchGatherer(self.tables, config.batch_size)
        self.threads = ThreadTuner(config.threads)
        self.report.kernel = self.trainer.kernel
        log(f"{'resuming' if self.report.resumed else 'starting'} {cursor.mode} training: "
            f"{len(cursor.plan) - cursor.position} steps, {remaining:,} rows; {self.trainer.kernel} training step")
        self.started = self.epoch_started = time.perf_counter()
        self.loss_total, self.loss_rows = 0.0, 0

    def train_pool(self, arrays: tuple[np.ndarray, np.ndarray, np.ndarray], generator: torch.Generator, where: str,
                   epoch: int) -> tuple[float, int]:
        """Train on a pool of rows (user rows, restaurant rows, clicks), shuffled by ``generator``,
        in batches; (sum of the per-row losses, rows). NonFiniteTraining, naming ``where``, when the
        loss or a weight is not finite (the unfinished run discarded, nothing saved)."""
        pool = self.gatherer.pool(*arrays, generator)
        starts = self.threads.paced(range(0, len(pool), self.config.batch_size))
        self.state.steps += self.trainer.train_pairs(self.tables.users, self.tables.restaurants, pool, starts)
        loss_sum, rows = self.trainer.take_loss()
        bad = non_finite_parameters(self.model.state_dict())
        if not math.isfinite(loss_sum) or bad:
            self.run_path.unlink(missing_ok=True)
            what = f"non-finite weights {bad}" if bad else f"non-finite loss {loss_sum}"
            raise NonFiniteTraining(
                f"{what} while training {where} (epoch {epoch}, step {self.state.steps}): training stopped without "
                f"saving; the unfinished run was discarded and the published checkpoint is unchanged (check the "
                f"feature snapshots and the learning rate)")
        self.state.rows_seen += rows
        self.report.rows += rows
        self.progress.add(rows)
        return loss_sum, rows

    def finish_step(self, epoch: int, days: list[str], loss: float, rows: int) -> None:
        """Count the plan step just trained (its loss, rows and days, passed to ``on_day`` with the
        cursor's pending scores) and move the cursor to the next step."""
        cursor = self.cursor
        self.loss_total, self.loss_rows = self.loss_total + loss, self.loss_rows + rows
        self.report.days += days
        if self.on_day is not None:
            self.on_day({"day": ", ".join(days), "epoch": epoch, "rows": rows,
                         "train_loss": loss / rows if rows else float("nan"),
                         **{k: v for k, v in (cursor.pending or {}).items() if k != "day"}})
        cursor.position, cursor.chunk, cursor.pending = cursor.position + 1, 0, None

    def end_of_epoch(self, epoch: int) -> bool:
        """Whether the step just finished was the last of ``epoch``; if so, its time is recorded and logged."""
        cursor = self.cursor
        next_epoch = cursor.plan[cursor.position][0] if cursor.position < len(cursor.plan) else None
        if next_epoch == epoch:
            return False
        self.report.epoch_seconds.append(time.perf_counter() - self.epoch_started)
        self.log(f"epoch {epoch} done in {self.report.epoch_seconds[-1]:.1f} s")
        return True

    def start_epoch(self) -> None:
        self.epoch_started = time.perf_counter()

    def plan_done(self) -> bool:
        return self.cursor.position == len(self.cursor.plan)

    def save(self) -> None:
        """Save the run as it stands to the unfinished run's file."""
        self.state.model, self.state.optimizer = self.model.state_dict(), self.optimizer.state_dict()
        self.state.save(self.run_path)

    def finish(self) -> TrainReport:
        """The report of the plan trained to its end."""
        report, cursor = self.report, self.cursor
        report.seconds = time.perf_counter() - self.started
        report.mean_loss = self.loss_total / self.loss_rows if self.loss_rows else float("nan")
        report.threads = self.threads.summary()
        report.validation = list(cursor.validations)  # every epoch's, also those before a resume
        report.selected_epoch = cursor.selection["epoch"] if cursor.selection else None
        return report


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
