"""A training run from start to release: one writer at a time, resumable, published only when audited."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.atomic import remove_stale_temporaries
from pipeline.audits import Rejected
from pipeline.data.layout import Warehouse
from pipeline.disk_space import ensure_room
from pipeline.locks import DEFAULT_LOCK_TIMEOUT_S
from pipeline.model.checkpoint import load_published_state
from pipeline.model.training.config import TrainConfig
from pipeline.model.training.full import train_full
from pipeline.model.training.incremental import train_incremental
from pipeline.model.training.release import Gate, publish_candidate
from pipeline.model.training.report import TrainReport, TrainResult
from pipeline.model.training.session import TrainingSession
from pipeline.model.training.start import NothingToTrain, start_run
from pipeline.publish import Artifact

LOOPS = {"incremental": train_incremental, "full": train_full}


def train(warehouse: Warehouse, config: TrainConfig, log: Callable[[str], None] = print,
          gate: Gate | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
          on_day: Callable[[dict], None] | None = None) -> TrainResult:
    """Run (or resume) training as ``config`` says and publish the result as the model of
    record if it passes its audits; :class:`~pipeline.audits.Rejected` otherwise (the model of
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
        start = start_run(warehouse, config, run_path, log)
        if isinstance(start, NothingToTrain):
            report = TrainReport(config.mode, False, discarded_unfinished=start.discarded_unfinished)
            return TrainResult(load_published_state(warehouse.checkpoint), report)
        session = TrainingSession(config, start, run_path, log, on_day)
        LOOPS[session.cursor.mode](session)
        report = session.finish()
        try:
            published = publish_candidate(artifact, start.state, start.tables, gate, report)
        except Rejected:
            run_path.unlink(missing_ok=True)  # finished and rejected: nothing to resume
            raise
        run_path.unlink(missing_ok=True)
        return TrainResult(start.state, report, published)
