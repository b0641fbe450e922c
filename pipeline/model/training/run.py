"""A training run from start to release: one writer at a time, resumable, published only when audited."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.atomic import remove_stale_temporaries
from pipeline.audits import AuditResult, Rejected
from pipeline.data.layout import Warehouse
from pipeline.disk_space import ensure_room
from pipeline.locks import DEFAULT_LOCK_TIMEOUT_S
from pipeline.model.checkpoint import load_published_state
from pipeline.model.training.config import TrainConfig
from pipeline.model.training.full import train_full
from pipeline.model.training.incremental import train_incremental
from pipeline.model.training.release import EVALUATION_FILE, NOT_RETIRED_CHECK, Gate, lineage, publish_candidate
from pipeline.model.training.report import TrainReport, TrainResult
from pipeline.model.training.session import TrainingSession
from pipeline.model.training.start import NothingToTrain, start_run
from pipeline.publish import Artifact, new_version_id
from pipeline.release import decide
from pipeline.release.decide import reconcile
from pipeline.release.gate import summary
from pipeline.release.registry import Registry

LOOPS = {"incremental": train_incremental, "full": train_full}


def train(warehouse: Warehouse, config: TrainConfig, log: Callable[[str], None] = print,
          gate: Gate | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
          on_day: Callable[[dict], None] | None = None, by: str = "training run") -> TrainResult:
    """Run (or resume) training as ``config`` says and publish the result if it passes its audits
    (``gate``: the release gate, :func:`pipeline.release.gate.release_gate`), recording its role
    in the registry (champion when there is none, else challenger; ``by`` says who decided);
    :class:`~pipeline.audits.Rejected` otherwise, recorded as rejected (nothing else changes). A
    run that would recreate a retired model is rejected before it trains. A second run waits for
    the first (the checkpoint's lock). ``on_day`` gets each step's numbers as it finishes: day (a
    full retrain's pool: its days), epoch, rows, train_loss and, incrementally, the day's
    prequential scores."""
    torch.set_num_threads(config.threads or 1)  # scoring and the gate; training paces its own (ThreadTuner)
    run_path = warehouse.training_run
    registry = Registry(warehouse.registry)
    artifact = Artifact(warehouse.checkpoint, pinned=lambda: registry.roles().kept())
    with artifact.lock(lock_timeout_s, on_wait=log):
        roles = reconcile(registry, artifact, log)
        leftovers = artifact.remove_leftovers() + remove_stale_temporaries(run_path)
        if leftovers:
            log(f"removed {leftovers} leftovers of killed training writes")
        # before any work: the run's saves and the candidate are each about as large as the model of record
        ensure_room(run_path, 2 * artifact.live_bytes(), "the unfinished run and the candidate checkpoint")
        start = start_run(warehouse, config, run_path, log)
        if isinstance(start, NothingToTrain):
            report = TrainReport(config.mode, False, discarded_unfinished=start.discarded_unfinished)
            return TrainResult(load_published_state(warehouse.checkpoint), report)
        run_lineage = lineage(start.state)
        retired = roles.retired_lineage(run_lineage)
        if retired is not None:
            run_path.unlink(missing_ok=True)  # it would only make the retired model again
            raise Rejected(artifact.path, [AuditResult(NOT_RETIRED_CHECK, False, {"retired_version": retired.version}, (
                f"this run would recreate {retired.version} (same parent, days and settings), retired "
                f"{retired.at} by {retired.by}: {retired.reason}; nothing was trained. New days, other "
                f"settings or `pipeline promote {retired.version}` change that"))])
        session = TrainingSession(config, start, run_path, log, on_day)
        LOOPS[session.cursor.mode](session)
        report = session.finish()
        version = new_version_id()
        try:
            published = publish_candidate(artifact, start.state, start.tables, gate, report, version, run_lineage)
        except Rejected as rejection:
            run_path.unlink(missing_ok=True)  # finished and rejected: nothing to resume
            decide.rejected(registry, version, run_lineage, rejection, by)
            raise
        run_path.unlink(missing_ok=True)
        evaluation = published.read_json(EVALUATION_FILE) if (published.path / EVALUATION_FILE).exists() else {}
        decide.accepted(registry, published.version, run_lineage, summary(evaluation), by)
        return TrainResult(start.state, report, published)
