"""The processed partitions a training run reads, pinned to one version each for the whole run."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.layout import Warehouse
from pipeline.data.processed_partition import live_partition, read_manifest
from pipeline.model.batches import FeatureTables
from pipeline.publish import Artifact


def resolve_partitions(warehouse: Warehouse, days: set[str], pinned: dict[str, str]) -> dict[str, Path]:
    """Each day's processed partition version directory, resolved once for the whole run: the
    version ``pinned`` (the one a resumed run validated), else the live one."""
    dirs = {}
    for day in sorted(days):
        if day not in pinned:
            dirs[day] = live_partition(warehouse.processed_clicks(day))
            continue
        try:
            dirs[day] = Artifact(warehouse.processed_clicks(day)).version_path(pinned[day])
        except FileNotFoundError as gone:
            raise FileNotFoundError(f"{gone}: the unfinished training run validated that version of {day}, which "
                                    f"was republished since; set restart: true to train on what is live now") from None
    return dirs


def checked_manifests(dirs: dict[str, Path], tables: FeatureTables) -> dict[str, dict]:
    """Each partition version's manifest, after checking it was resolved against ``tables``' ids."""
    manifests, stale = {}, []
    versions = tables.versions()
    for day, directory in sorted(dirs.items()):
        manifest = manifests[day] = read_manifest(directory)
        if (manifest.get("users_ids_version"), manifest.get("restaurants_ids_version")) != (
                versions["users_ids"], versions["restaurants_ids"]):
            stale.append(day)
    if stale:
        raise ValueError(f"processed partitions {stale} were resolved against other feature ids than the "
                         f"feature snapshots this run trains on: re-materialize processed_clicks for them")
    return manifests
