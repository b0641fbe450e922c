"""An operator's (or the judge's) release decisions: promote, retire, roll back, and the list of
versions with their roles. Each records its decision in the registry first (who, when, why), then
moves the pointers to match (:func:`pipeline.release.switch.follow_roles`)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from pipeline.data.layout import Warehouse
from pipeline.model.training.release import EVALUATION_FILE
from pipeline.publish import Artifact
from pipeline.release import drift
from pipeline.release.judge import Policy, Verdict, clicked_pairs, days_between, judge, logged_answers
from pipeline.release.registry import Decision, Registry, Roles
from pipeline.release.switch import export_of, follow_roles


class ReleaseError(ValueError):
    """A decision that cannot be taken (the version unknown, not kept, or already in that role)."""


def _kept_checkpoint(warehouse: Warehouse, version: str) -> None:
    checkpoint = Artifact(warehouse.checkpoint)
    if version not in checkpoint.versions():
        raise ReleaseError(f"checkpoint {version} is not kept (kept: {', '.join(checkpoint.versions()) or 'none'})")


def promote(warehouse: Warehouse, version: str, reason: str, by: str, metrics: dict | None = None) -> dict:
    """Make ``version`` the champion: the challenger (the usual case), a former champion or a
    retired model still kept (an override). Its export must exist (model_exports makes the
    challenger's)."""
    registry = Registry(warehouse.registry)
    roles = registry.roles()
    if roles.champion == version:
        raise ReleaseError(f"{version} is already the champion")
    _kept_checkpoint(warehouse, version)
    if export_of(Artifact(warehouse.export), version) is None:
        raise ReleaseError(f"{version} has no export: materialize model_exports first (it exports the champion and "
                           f"the challenger)")
    roles = registry.record(Decision(version, "champion", by, reason, metrics=metrics or {}))
    return {"champion": version, "former": roles.former_champions[-1:], "switched": follow_roles(warehouse, roles)}


def retire(warehouse: Warehouse, version: str, reason: str, by: str, metrics: dict | None = None) -> dict:
    """Take ``version`` out of service for good: a challenger (its canary ends), or the champion,
    which the newest kept former champion replaces (a rollback). Its lineage is not trained again."""
    registry = Registry(warehouse.registry)
    roles = registry.roles()
    if version == roles.champion:
        return rollback(warehouse, reason, by)
    if version != roles.challenger and version not in roles.former_champions:
        raise ReleaseError(f"{version} is not serving (role: {roles.role_of(version) or 'none'}); the champion is "
                           f"{roles.champion}, the challenger {roles.challenger or 'none'}")
    roles = registry.record(Decision(version, "retired", by, reason, metrics=metrics or {}))
    return {"retired": version, "switched": follow_roles(warehouse, roles)}


def rollback(warehouse: Warehouse, reason: str, by: str) -> dict:
    """Retire the champion (and the challenger, trained on top of it) and make the newest former
    champion whose checkpoint and export are kept the champion again."""
    registry = Registry(warehouse.registry)
    roles = registry.roles()
    if roles.champion is None:
        raise ReleaseError("there is no champion to roll back")
    export, checkpoint = Artifact(warehouse.export), Artifact(warehouse.checkpoint)
    target = next((v for v in reversed(roles.former_champions)
                   if v in checkpoint.versions() and export_of(export, v)), None)
    if target is None:
        raise ReleaseError(f"no former champion of {roles.champion} is kept with its export (former: "
                           f"{', '.join(roles.former_champions) or 'none'}): nothing was rolled back")
    decisions = [Decision(roles.champion, "retired", by, reason)]
    if roles.challenger:
        decisions.append(Decision(roles.challenger, "retired", by, f"rolled back with champion {roles.champion}"))
    decisions.append(Decision(target, "champion", by, f"rollback from {roles.champion}: {reason}"))
    retired = roles.champion
    roles = registry.record(*decisions)
    return {"retired": retired, "champion": target, "switched": follow_roles(warehouse, roles)}


def challenge(warehouse: Warehouse, version: str, reason: str, by: str) -> dict:
    """Make a kept version the challenger without the offline comparison (an override: e.g. a model
    trained elsewhere, or one to try on a canary anyway); the judge decides on live traffic as for
    any challenger. A challenger already out is retired (superseded)."""
    registry = Registry(warehouse.registry)
    roles = registry.roles()
    if version in (roles.champion, roles.challenger):
        raise ReleaseError(f"{version} is already the {roles.role_of(version)}")
    _kept_checkpoint(warehouse, version)
    decisions = [Decision(roles.challenger, "retired", by, f"superseded by {version}")] if roles.challenger else []
    roles = registry.record(*decisions, Decision(version, "challenger", by, reason))
    return {"challenger": version, "switched": follow_roles(warehouse, roles)}


def judge_canary(warehouse: Warehouse, log_dir: Path, click_files: Callable[[str], list[Path]],
                 policy: Policy | None = None, by: str = "judge") -> tuple[Verdict | None, dict]:
    """Judge the challenger on the traffic logged since it was recorded (``click_files(day)``: the
    click event files of a day) and act on the verdict: promote it, retire it, or wait. Returns
    (the verdict, what was done); (None, {}) when there is no challenger or either role's export is
    not published yet."""
    roles = Registry(warehouse.registry).roles()
    if roles.challenger is None or roles.champion is None:
        return None, {}
    export = Artifact(warehouse.export)
    champion_export, challenger_export = export_of(export, roles.champion), export_of(export, roles.challenger)
    if champion_export is None or challenger_export is None:
        return None, {}
    since = dt.datetime.fromisoformat(roles.latest[roles.challenger].at)
    answers = logged_answers(log_dir, since)
    clicks = clicked_pairs([f for day in days_between(since, dt.datetime.now(dt.UTC)) for f in click_files(day)])
    verdict = judge(answers, clicks, champion_export, challenger_export, policy or Policy(), since=since.isoformat())
    report = drift.latest(warehouse.drift)
    blocked = report.blocking() if report is not None and report.challenger == roles.challenger else []
    if verdict.action == "promote" and blocked:
        verdict.action = "wait"
        verdict.reasons.append(f"promotion blocked by drift: {'; '.join(blocked)}")
    done: dict = {}
    if verdict.action == "promote":
        done = promote(warehouse, roles.challenger, verdict.describe(), by, verdict.metrics())
    elif verdict.action == "rollback":
        done = retire(warehouse, roles.challenger, verdict.describe(), by, verdict.metrics())
    return verdict, done


def models(warehouse: Warehouse) -> list[dict]:
    """Every version the registry knows, newest first: role, the decision that gave it, its
    metrics, training window, feature versions and lineage (those of kept checkpoints)."""
    roles = Registry(warehouse.registry).roles()
    checkpoint = Artifact(warehouse.checkpoint)
    kept = set(checkpoint.versions())
    rows = []
    for version, decision in sorted(roles.latest.items(), reverse=True):
        lineage = next((d.lineage for d in reversed(roles.history) if d.version == version and d.lineage), "")
        row = {"version": version, "role": roles.role_of(version), "decided_at": decision.at,
               "decided_by": decision.by, "reason": decision.reason, "lineage": lineage,
               "kept": version in kept, "metrics": _metrics(checkpoint, version, roles)}
        if version in kept:
            record = checkpoint.record(version)
            days = record.get("trained_days") or []
            row.update({"mode": record.get("mode"), "parent": record.get("parent", ""),
                        "trained_days": len(days), "window": [days[0], days[-1]] if days else [],
                        "rows_in_model": record.get("rows_in_model"),
                        "feature_versions": record.get("feature_versions"),
                        "export": export_of(Artifact(warehouse.export), version)})
        rows.append(row)
    return rows


def _metrics(checkpoint: Artifact, version: str, roles: Roles) -> dict:
    """The figures the version was decided on: its evaluation when kept, else its decisions'."""
    if version in checkpoint.versions():
        path = Path(checkpoint.version_path(version)) / EVALUATION_FILE
        if path.exists():
            evaluation = json.loads(path.read_text())
            return {k: evaluation[k] for k in ("accuracy", "auc", "log_loss", "calibration_error", "ndcg_at_5",
                                               "ndcg_at_10", "user_auc") if k in evaluation}
    for decision in reversed(roles.history):
        if decision.version == version and decision.metrics:
            return decision.metrics
    return {}
