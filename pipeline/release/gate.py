"""The release gate a training run's candidate passes before it is published: the absolute bar,
then the comparison with the champion on the same data (:mod:`pipeline.release.evaluation`,
:mod:`pipeline.release.compare`). The first model, with no champion, needs only the bar."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.audits import AuditResult
from pipeline.data.layout import Warehouse
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.evaluate import ACCURACY_BAR, accuracy_audit
from pipeline.model.network import ClickMLP
from pipeline.release import compare
from pipeline.release.evaluation import LOGGED_DAYS, LoggedLists, evaluate, logged_list_files, read_logged_lists
from pipeline.release.registry import Registry

COMPARISON_CHECK = "not_worse_than_champion"
_SUMMARY = ("accuracy", "auc", "log_loss", "calibration_error", "rows", "ndcg_at_5", "ndcg_at_10", "user_auc",
            "logged_rows", "logged_requests_with_clicks", "users_with_both", "served_ndcg_at_5")


def summary(evaluation: dict) -> dict:
    """The figures of an evaluation a decision records (no tables)."""
    return {k: evaluation[k] for k in _SUMMARY if k in evaluation}


def release_gate(warehouse: Warehouse, test_files: Sequence[Path], accuracy_check: str,
                 bar: float = ACCURACY_BAR, logged_days: int = LOGGED_DAYS,
                 margins: dict[str, tuple[bool, float]] = compare.MARGINS):
    """A gate for :func:`pipeline.model.training.train`: audits ``accuracy_check`` (the bar) and
    :data:`COMPARISON_CHECK` (no metric worse than the champion's beyond its margin, both scored here
    on the test files and the held-out logged lists); the evaluation stored with the checkpoint
    holds the candidate's figures, the champion's and each comparison."""

    def gate(model: ClickMLP, tables: FeatureTables) -> tuple[list[AuditResult], dict]:
        rows = read_logged_lists(logged_list_files(warehouse, logged_days))
        logged = LoggedLists(rows, tables) if len(rows) else None
        evaluation = evaluate(model, tables, test_files, logged)
        audits = [accuracy_audit(evaluation, test_files, accuracy_check, bar)]
        champion = Registry(warehouse.registry).roles().champion
        if champion is None:
            evaluation["champion"] = None
            audits.append(AuditResult(COMPARISON_CHECK, True, {"champion_version": ""},
                                      "no champion yet: the bar alone decides"))
            return audits, evaluation
        champion_model, _ = load_checkpoint_model(warehouse.checkpoint, champion)
        theirs = evaluate(champion_model, tables, test_files, logged)
        comparisons = compare.compare(evaluation, theirs, margins)
        bad = compare.worse(comparisons)
        evaluation["champion"] = {"version": champion, **summary(theirs)}
        evaluation["comparison"] = [c.as_json() for c in comparisons]
        audits.append(AuditResult(
            COMPARISON_CHECK, not bad,
            {"champion_version": champion, "worse_metrics": len(bad),
             **{f"{c.metric}_change": c.change for c in comparisons if c.compared}},
            "; ".join(c.describe() for c in bad) + f": worse than champion {champion} beyond the margin"
            if bad else ""))
        return audits, evaluation

    return gate
