"""Releasing the click model: the roles, the canary's judge, the operator's decisions, and drift.

``model_release`` is the registry's view in the UI: every materialization is one look at the roles,
with the judge's figures when a challenger is out, and the decision taken if any (promote, retire,
or wait). ``release_judge_sensor`` starts it whenever the impression log or the click events of a
challenger's canary grew; an operator starts it with config to promote, retire, roll back or
challenge by hand (the same as ``pipeline promote VERSION --reason TEXT``). ``model_drift``
measures feature and score drift for the model under judgement after every new model or snapshot;
the judge does not promote past its block thresholds.
"""

import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from pipeline.audits import AuditResult
from pipeline.defs.assets.model import model_exports
from pipeline.defs.charts import bars_svg, picture, shares_svg
from pipeline.defs.policies import FOLLOWS_PARENTS, OWNER
from pipeline.defs.publishing import check_results
from pipeline.defs.resources import SourceResource, WarehouseResource
from pipeline.defs.settings import SETTINGS
from pipeline.release import drift, mlflow_mirror, operations
from pipeline.release.drift_check import measure
from pipeline.release.judge import Policy
from pipeline.release.registry import Registry, Roles

_POLICY = Policy()
Action = Literal["judge", "promote", "retire", "rollback", "challenge"]


class ReleaseConfig(dg.Config):
    """What a run of model_release does: judge the canary (the sensor's runs), or an operator's decision."""

    action: Action = Field(default="judge", description=(
        "judge: the canary's verdict on live traffic (promote, retire or wait); promote VERSION: make it the "
        "champion; retire VERSION: out of service for good (the champion: the former champion serves again); "
        "rollback: retire the champion and the challenger; challenge VERSION: put a kept version on the canary "
        "without the offline comparison."))
    version: str = Field(default="", description="The checkpoint version (`pipeline models`) for promote, retire "
                                                 "and challenge.")
    reason: str = Field(default="", description="Why, for the record: required for every action but judge.")
    operator: str = Field(default="", description="Who decides (default: the Dagster run).")
    min_requests: int = Field(default=_POLICY.min_requests, gt=0,
                              description="Canary requests before the judge may promote.")
    margin: float = Field(default=_POLICY.margin, ge=0, description=(
        "CTR@5 the challenger may lose against the champion and still be promoted (non-inferiority margin)."))
    confidence: float = Field(default=_POLICY.confidence, gt=0.5, lt=1,
                              description="One-sided confidence of the promotion's non-inferiority test.")
    rollback_confidence: float = Field(default=_POLICY.rollback_confidence, gt=0.5, lt=1, description=(
        "One-sided confidence that the challenger is worse, for a rollback."))

    def policy(self) -> Policy:
        return Policy(min_requests=self.min_requests, margin=self.margin, confidence=self.confidence,
                      rollback_confidence=self.rollback_confidence)


def _decisions_table(roles: Roles, last: int = 15) -> dg.MetadataValue:
    rows = [f"| {d.at} | {d.version} | {d.role} | {d.by} | {d.reason[:200].replace('|', '/')} |"
            for d in reversed(roles.history[-last:])]
    return dg.MetadataValue.md("| when | version | role | by | why |\n|---|---|---|---|---|\n" + "\n".join(rows))


def _decide(config: ReleaseConfig, layout, by: str) -> dict:
    if config.action != "judge" and not config.reason.strip():
        raise dg.Failure(f"{config.action} needs a reason (config `reason`)")
    if config.action in ("promote", "retire", "challenge") and not config.version:
        raise dg.Failure(f"{config.action} needs a version (config `version`; `pipeline models` lists them)")
    act = {"promote": operations.promote, "retire": operations.retire, "challenge": operations.challenge}
    try:
        if config.action == "rollback":
            return operations.rollback(layout, config.reason, by)
        return act[config.action](layout, config.version, config.reason, by)
    except (operations.ReleaseError, FileNotFoundError) as refused:
        raise dg.Failure(f"{config.action} refused: {refused}", allow_retries=False) from None


@dg.asset(group_name="model", kinds={"python"}, owners=[OWNER], deps=[model_exports],
          pool="model_release", code_version="1")
def model_release(context: dg.AssetExecutionContext, config: ReleaseConfig, source: SourceResource,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The roles of the click model's versions: the champion serves everyone; a challenger (a
    retrain not worse than the champion on the same held-out data) is shadow-scored and served to a
    canary share of users. The judge compares the canary's CTR@5 with the champion's on the same
    traffic (one-sided tests), with error rate and latency bounds, and promotes or retires the
    challenger; an operator can decide instead. Every decision is recorded: who, when, why, figures.
    The judge reads the impression log's segments and the source's click events as they arrive (the
    daily feedback assets come a day later)."""
    layout = warehouse.layout()
    by = config.operator or f"dagster run {context.run.run_id[:8]}"
    metadata: dict = {}
    if config.action == "judge":
        opened = source.open()
        with tempfile.TemporaryDirectory(prefix="clicks-") as scratch:
            verdict, done = operations.judge_canary(layout, warehouse.impression_log(),
                                                    lambda day: opened.click_event_files(day, Path(scratch)),
                                                    config.policy(), by=f"judge ({by})")
        if verdict is None:
            metadata["verdict"] = "no challenger out (or its export is not published yet)"
        else:
            context.log.info(verdict.describe())
            metadata.update({"verdict": verdict.action, "why": "; ".join(verdict.reasons),
                             **{k: v for k, v in verdict.metrics().items() if isinstance(v, int | float)}})
    else:
        done = _decide(config, layout, by)
        context.log.info(f"{config.action}: {json.dumps(done)}")
        metadata["verdict"] = config.action
    roles = Registry(layout.registry).roles()
    mirrored = mlflow_mirror.mirror(SETTINGS.release.mlflow_tracking_uri, context.log.warning)
    if mirrored is not None:
        mirrored.mirror_roles(roles)
    return dg.MaterializeResult(metadata={
        **metadata, "champion": roles.champion or "", "challenger": roles.challenger or "",
        "former_champions": dg.MetadataValue.json(roles.former_champions),
        "decision": dg.MetadataValue.json(done), "decisions": _decisions_table(roles),
        "decisions_recorded": len(roles.history)},
        data_version=dg.DataVersion(Registry(layout.registry).version() or "none"))


class DriftConfig(dg.Config):
    """The drift thresholds (PSI)."""

    warn: float = Field(default=drift.WARN, gt=0, description="Feature PSI above which the check warns.")
    block: float = Field(default=drift.BLOCK, gt=0, description=(
        "Feature PSI above which the judge does not promote the challenger."))
    score_warn: float = Field(default=drift.WARN, gt=0, description=(
        "PSI of the challenger's scores against the champion's above which the check warns."))
    score_block: float = Field(default=0.5, gt=0, description=(
        "PSI of the challenger's scores against the champion's above which the judge does not promote it."))


@dg.asset(group_name="model", kinds={"python"}, owners=[OWNER], code_version="1", pool="model_drift",
          deps=["click_model", "user_features", "restaurant_features"], automation_condition=FOLLOWS_PARENTS,
          check_specs=[dg.AssetCheckSpec(drift.FEATURES_CHECK, asset="model_drift", description=(
              "every feature's PSI (newest snapshot against the one the judged model was trained on) below the "
              "warning threshold")),
              dg.AssetCheckSpec(drift.SCORES_CHECK, asset="model_drift", description=(
                  "PSI of the challenger's scores against the champion's, on the same inputs, below the warning "
                  "threshold"))])
def model_drift(context: dg.AssetExecutionContext, config: DriftConfig, warehouse: WarehouseResource):
    """Population stability (PSI) of every user and restaurant feature of the newest snapshots
    against the snapshots the model under judgement (the challenger, else the champion) was trained
    on, and of the challenger's click probabilities against the champion's on the same 20,000
    pairs. Above the warning thresholds the checks warn; above the block thresholds the judge does
    not promote the challenger. Plots: the largest shifts."""
    layout = warehouse.layout()
    report = measure(layout, warn=config.warn, block=config.block, score_warn=config.score_warn,
                     score_block=config.score_block)
    drift.publish(report, layout.drift)
    largest = report.largest(8)
    metadata: dict[str, Any] = {"model": report.model, "challenger": report.challenger,
                "max_feature_psi": largest[0][1] if largest else 0.0,
                "features_over_warning": sum(v > report.warn for v in report.features.values()),
                "features_over_block": sum(v > report.block for v in report.features.values()),
                "blocks_promotion": int(bool(report.blocking())),
                "largest_shifts": picture(bars_svg(largest, {"warn": report.warn, "block": report.block},
                                                   "Feature PSI (largest)", "PSI"), "feature PSI"),
                "psi": dg.MetadataValue.json(report.features)}
    if report.score is not None:
        metadata["score_psi"] = report.score
    for name, shares in report.histograms.items():
        metadata[f"distribution {name}"] = picture(shares_svg(shares["reference"], shares["current"],
                                                              f"{name}: reference and current"), name)
    for line in report.blocking():
        context.log.warning(f"promotion blocked by drift: {line}")
    audits = report.audits()
    if report.score is None:
        audits.append(AuditResult(drift.SCORES_CHECK, True, {}, "no challenger"))
    return dg.MaterializeResult(metadata=metadata,
                                check_results=check_results(audits, severity=dg.AssetCheckSeverity.WARN))
