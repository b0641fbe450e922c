"""Release of a finished run: its candidate checkpoint written, audited (finite weights, then the
release gate) and published as the head of the model's lineage, or rejected (nothing changes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from pipeline.audits import AuditResult
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import CHECKPOINT_FILE, TrainingState
from pipeline.model.network import ClickMLP
from pipeline.model.training.report import TrainReport
from pipeline.model.training.scoring import non_finite_parameters
from pipeline.publish import Artifact, Published

FINITE_CHECK = "click_model_is_finite"
NOT_RETIRED_CHECK = "not_a_retired_model"
EVALUATION_FILE = "evaluation.json"

Gate = Callable[[ClickMLP, FeatureTables], tuple[list[AuditResult], dict]]
"""A release gate: (audits, evaluation to store with the checkpoint) for a candidate model."""


def lineage(state: TrainingState) -> str:
    """What a run is, independent of when it ran: the checkpoint it continues, its plan and settings
    (the cursor's fingerprint) and the processed partition versions it trains on. Two runs with one
    lineage make the same model: a retired model's lineage is not trained again."""
    cursor = state.cursor
    assert cursor is not None, "a run's lineage is known while it has a cursor"
    payload = json.dumps([cursor.parent, cursor.fingerprint, sorted(cursor.partitions.items())])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def publish_candidate(artifact: Artifact, state: TrainingState, tables: FeatureTables, gate: Gate | None,
                      report: TrainReport, version: str | None = None, run_lineage: str = "") -> Published:
    """The finished state (its cursor dropped) as a candidate checkpoint: written, read back,
    audited (finite weights, then the gate on the model as written, its evaluation stored beside
    it as ``EVALUATION_FILE``), published as the model of record; :class:`~pipeline.audits.Rejected`
    when an audit fails. The artifact's lock must be held."""
    held_out = state.cursor.validation if state.cursor else []
    parent = state.cursor.parent if state.cursor else ""
    state.cursor = None

    def write(staging: Path) -> None:
        state.save(staging / CHECKPOINT_FILE)

    def audit(staging: Path, _) -> list[AuditResult]:
        written = TrainingState.read(staging / CHECKPOINT_FILE)
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

    return artifact.write_audit_publish_locked(write, audit, version=version, record={
        "lineage": run_lineage, "parent": parent,
        "mode": report.mode, "trained_days": sorted(state.trained), "rows_in_model": sum(state.trained.values()),
        "validation_days": held_out, "validation": report.validation, "selected_epoch": report.selected_epoch,
        "steps": state.steps, "feature_versions": state.versions})
