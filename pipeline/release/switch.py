"""Making the roles true: the export the API serves to everyone is the champion's; the checkpoint
training continues is the lineage's head. The registry decides first; these pointers follow it.

An export version records the checkpoint it was made from (``checkpoint_version``); a role's
export is the newest kept version made from its checkpoint at the current export revision.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.data.layout import Warehouse
from pipeline.locks import LockTimeout
from pipeline.publish import Artifact
from pipeline.release.registry import Registry, Roles
from pipeline.serving.formats import EXPORT_REVISION, FORMAT_FILES


def export_of(export: Artifact, checkpoint_version: str) -> str | None:
    """The newest kept export of ``checkpoint_version`` at the current revision, None if none."""
    for version in reversed(export.versions()):
        try:
            record = export.record(version)
        except (FileNotFoundError, ValueError):
            continue
        if (record.get("checkpoint_version") == checkpoint_version
                and record.get("export_revision") == EXPORT_REVISION
                and set(record.get("formats", {})) == set(FORMAT_FILES)):
            return version
    return None


def kept_exports(export: Artifact, roles: Roles) -> set[str]:
    """Export versions a prune must keep: those of the roles' kept checkpoints."""
    kept = roles.kept()
    found = set()
    for version in export.versions():
        try:
            if export.record(version).get("checkpoint_version") in kept:
                found.add(version)
        except (FileNotFoundError, ValueError):
            continue
    return found


def pinned_exports(warehouse: Warehouse) -> Callable[[], set[str]]:
    """What a publish of the export keeps besides its live version and predecessor."""
    export = Artifact(warehouse.export)
    return lambda: kept_exports(export, Registry(warehouse.registry).roles())


def lineage_head(checkpoint: Artifact, roles: Roles) -> str | None:
    """The checkpoint the next incremental run continues: the challenger when it holds every day
    the champion was trained on (a retrain on top of it), else the champion (a challenger put on the
    canary by hand may be older)."""
    if roles.challenger and roles.champion and roles.challenger in checkpoint.versions() \
            and roles.champion in checkpoint.versions():
        days = {version: set(checkpoint.record(version).get("trained_days") or [])
                for version in (roles.champion, roles.challenger)}
        return roles.challenger if days[roles.challenger] >= days[roles.champion] else roles.champion
    return roles.challenger or roles.champion


def follow_roles(warehouse: Warehouse, roles: Roles, lock_timeout_s: float = 60.0) -> dict:
    """Point the export at the champion's export and, unless a training run holds it, the
    checkpoint at the lineage's head (a training run does that itself when it starts). Returns
    what switched; FileNotFoundError naming the version when the champion has no kept export
    (materialize model_exports)."""
    switched: dict = {}
    export = Artifact(warehouse.export)
    if roles.champion:
        wanted = export_of(export, roles.champion)
        if wanted is None:
            raise FileNotFoundError(f"champion {roles.champion} has no export kept: materialize model_exports "
                                    f"(the roles are recorded; the API serves the champion once it is exported)")
        with export.lock(lock_timeout_s):
            before = export.live_version()
            if before != wanted:
                export.point_to(wanted)
                switched["export"] = {"from": before, "to": wanted}
    checkpoint = Artifact(warehouse.checkpoint)
    head = lineage_head(checkpoint, roles)
    if head and checkpoint.live_version() != head and head in checkpoint.versions():
        try:
            with checkpoint.lock(0.0):
                before = checkpoint.live_version()
                checkpoint.point_to(head)
                switched["checkpoint"] = {"from": before, "to": head}
        except LockTimeout:
            switched["checkpoint"] = {"deferred": "a training run holds the checkpoint; it continues from "
                                                  f"{head} when it next starts"}
    return switched
