"""What is live, and going back one version: the pure logic behind ``pipeline status`` and
``pipeline rollback``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.data.layout import Warehouse
from pipeline.model.checkpoint import load_unfinished_run
from pipeline.publish import Artifact
from pipeline.store.base import FeatureStore


def _artifact(path: Path, *fields: str) -> dict | None:
    artifact = Artifact(path)
    if artifact.live_version() is None:
        return None
    record = artifact.record()
    return {"version": record["version"], "published_at": record["published_at"],
            "previous": record.get("previous"), "kept": artifact.versions(),
            **{f: record.get(f) for f in fields}}


def status(warehouse: Warehouse, store: FeatureStore | None) -> dict:
    """Every published artifact's live version (and what it pairs with), the unfinished training
    run if there is one, and the online store's live version."""
    result: dict[str, Any] = {
        "features": {kind: _artifact(warehouse.features(kind), "rows", "ids_version")
                     for kind in ("users", "restaurants")},
        "processed_days": warehouse.processed_days(),
        "checkpoint": _artifact(warehouse.checkpoint, "mode", "trained_days", "rows_in_model", "feature_versions"),
        "export": _artifact(warehouse.export, "checkpoint_version", "feature_versions"),
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


def rollback_model(warehouse: Warehouse) -> dict:
    """The served export goes back to its previous version, and the model of record to the
    checkpoint that export was made from (so the next incremental run continues from it).

    Both targets are checked before anything switches (FileNotFoundError naming what is missing:
    nothing was rolled back). The checkpoint, the model of record, switches first, then the export;
    if the export cannot follow, the checkpoint is put back, and if even that fails the error says
    which pair is live and what to run."""
    export, checkpoint = Artifact(warehouse.export), Artifact(warehouse.checkpoint)
    export_from = export.live_version()
    if export_from is None:
        raise FileNotFoundError(f"nothing published at {export.path}: nothing was rolled back")
    export_to = export.record(export_from).get("previous")
    if not export_to or export_to not in export.versions():
        raise FileNotFoundError(f"{export.path}: no previous version is kept to roll back to (kept: "
                                f"{', '.join(export.versions())}): nothing was rolled back")
    wanted = export.record(export_to).get("checkpoint_version")
    checkpoint_from = checkpoint.live_version()
    switch_checkpoint = bool(wanted) and wanted != checkpoint_from
    if switch_checkpoint and wanted not in checkpoint.versions():
        raise FileNotFoundError(f"{checkpoint.path}: version {wanted}, which the previous export {export_to} was "
                                f"made from, is not kept (kept: {', '.join(checkpoint.versions()) or 'none'}): "
                                f"nothing was rolled back")
    result = {"export": {"from": export_from, "to": export_to}}
    if switch_checkpoint:
        checkpoint.rollback(to=wanted)
        result["checkpoint"] = {"from": checkpoint_from, "to": wanted}
    try:
        export.rollback(to=export_to)
    except Exception as error:
        if not switch_checkpoint:
            raise
        try:
            checkpoint.rollback(to=checkpoint_from)
        except Exception as undo:
            raise RuntimeError(
                f"the checkpoint was rolled back to {wanted} but the export could not follow ({error}) and the "
                f"checkpoint could not be put back ({undo}): the live checkpoint {wanted} and export {export_from} "
                f"do not pair; run `pipeline rollback model` again once that is fixed (it rolls the export back "
                f"to {export_to}, made from {wanted})") from error
        raise RuntimeError(f"the export could not be rolled back to {export_to} ({error}); the checkpoint was put "
                           f"back to {checkpoint_from}: nothing was rolled back") from error
    return result


def rollback_features(store: FeatureStore) -> dict:
    """The online store's previous version becomes live again."""
    before, after = store.rollback()
    return {"online_store": {"from": before, "to": after}}
