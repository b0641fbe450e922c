"""The exports of the roles: the champion's and the challenger's checkpoints, each exported once
(:func:`pipeline.model.export.publish_export`) beside the live export, which then follows the
champion (:func:`pipeline.release.switch.follow_roles`)."""

from __future__ import annotations

import torch

from pipeline.data.layout import Warehouse
from pipeline.model import inputs
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.export import publish_export
from pipeline.publish import Artifact, Published
from pipeline.release.decide import ADOPTED
from pipeline.release.registry import Decision, Registry, Roles
from pipeline.release.switch import export_of, follow_roles, pinned_exports

PARITY_ROWS = 4096


def current_roles(warehouse: Warehouse) -> Roles:
    """The roles; a checkpoint published before the registry existed is adopted as champion."""
    registry = Registry(warehouse.registry)
    roles = registry.roles()
    live = Artifact(warehouse.checkpoint).live_version()
    if roles.champion is None and live is not None and not roles.history:
        roles = registry.record(Decision(live, "champion", "pipeline", ADOPTED))
    return roles


def export_checkpoint(warehouse: Warehouse, version: str, verify_timeout_s: float) -> Published:
    """Export checkpoint ``version`` (kept beside the live export), checked on a parity sample of
    the feature snapshots it was trained on."""
    model, state = load_checkpoint_model(warehouse.checkpoint, version)
    tables = FeatureTables.load(warehouse, state.versions)  # the snapshots it was trained on, or fail
    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, len(tables.users), (PARITY_ROWS,), generator=g)
    restaurants = torch.randint(0, len(tables.restaurants), (PARITY_ROWS,), generator=g)
    sample = inputs.pairs(tables.users[users], tables.restaurants[restaurants])
    return publish_export(model, warehouse.export, sample, record={
        "checkpoint_version": version, "feature_versions": state.versions},
        verify_timeout_s=verify_timeout_s, live=False, pinned=pinned_exports(warehouse))


def missing_exports(warehouse: Warehouse, roles: Roles) -> list[tuple[str, str]]:
    """(role, checkpoint version) of the serving roles with no export at the current revision."""
    export = Artifact(warehouse.export)
    return [(role, version) for role, version in (("champion", roles.champion), ("challenger", roles.challenger))
            if version and export_of(export, version) is None]


def export_roles(warehouse: Warehouse, verify_timeout_s: float, log=lambda message: None
                 ) -> tuple[Roles, dict[str, Published], dict]:
    """Export each serving role whose export is missing, then point the live export at the
    champion's: (the roles, the exports made by role, what switched)."""
    roles = current_roles(warehouse)
    made = {}
    for role, version in missing_exports(warehouse, roles):
        log(f"exporting the {role}, checkpoint {version}")
        made[role] = export_checkpoint(warehouse, version, verify_timeout_s)
    return roles, made, follow_roles(warehouse, roles)
