"""What is live, and going back one version of the online features: the pure logic behind
``pipeline status`` and ``pipeline rollback features`` (a model's rollback is a release decision:
:func:`pipeline.release.operations.rollback`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.data.layout import Warehouse
from pipeline.model.checkpoint import load_unfinished_run
from pipeline.publish import Artifact
from pipeline.release.registry import Registry
from pipeline.store.base import FeatureStore


def _artifact(path: Path, *fields: str) -> dict | None:
    artifact = Artifact(path)
    if artifact.live_version() is None:
        return None
    record = artifact.record()
    return {"version": record["version"], "published_at": record["published_at"],
            "previous": record.get("previous"), "kept": artifact.versions(),
            **{f: record.get(f) for f in fields}}


def _roles(warehouse: Warehouse) -> dict:
    roles = Registry(warehouse.registry).roles()
    last = roles.history[-1] if roles.history else None
    return {"champion": roles.champion, "challenger": roles.challenger, "former_champions": roles.former_champions,
            "last_decision": last.as_json() if last else None}


def status(warehouse: Warehouse, store: FeatureStore | None) -> dict:
    """Every published artifact's live version (and what it pairs with), the unfinished training
    run if there is one, and the online store's live version."""
    result: dict[str, Any] = {
        "features": {kind: _artifact(warehouse.features(kind), "rows", "ids_version")
                     for kind in ("users", "restaurants")},
        "processed_days": warehouse.processed_days(),
        "checkpoint": _artifact(warehouse.checkpoint, "mode", "trained_days", "rows_in_model", "feature_versions"),
        "export": _artifact(warehouse.export, "checkpoint_version", "feature_versions"),
        "roles": _roles(warehouse),
        "geo_index": _artifact(warehouse.geo_index, "restaurants"),
    }
    if result["checkpoint"]:
        evaluation = Artifact(warehouse.checkpoint).live() / "evaluation.json"
        if evaluation.exists():
            result["checkpoint"]["accuracy"] = json.loads(evaluation.read_text())["accuracy"]
        result["checkpoint"]["trained_days"] = len(result["checkpoint"]["trained_days"] or [])
    try:
        unfinished = load_unfinished_run(warehouse.training_run)
        if unfinished is None:
            result["unfinished_training_run"] = None
        else:
            _, cursor = unfinished
            result["unfinished_training_run"] = {"mode": cursor.mode, "step": cursor.position,
                                                 "steps": len(cursor.plan)}
    except ValueError as unreadable:
        result["unfinished_training_run"] = {"error": str(unreadable)}
    if store is not None:
        live = store.live()
        result["online_store"] = {"live": dataclasses.asdict(live) if live else None,
                                  "versions": [v.number for v in store.versions()]}
    return result


def rollback_features(store: FeatureStore) -> dict:
    """The online store's previous version becomes live again."""
    before, after = store.rollback()
    return {"online_store": {"from": before, "to": after}}
