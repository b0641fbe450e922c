"""Feature tables: reading the reference files and float32 snapshots (ids resolve to rows with
:class:`~pipeline.data.id_index.IdIndex`).

A snapshot is sorted by id and stored as an uncompressed Arrow IPC file (id column, float32
feature columns, float64 coordinates for restaurants), so loading it is a memory map. Two versions
are stored in its schema metadata: ``ids_version`` (the id set and order: what processed click rows
depend on) and ``version`` (ids and values: what a model trained on them depends on).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.arrow_ipc import read_ipc, write_ipc
from pipeline.audits import AuditResult
from pipeline.data.id_index import IdIndex
from pipeline.data.schema import RESTAURANT_FEATURES, USER_FEATURES, TableSpec
from pipeline.data.shrink import ShrinkGuard, dropped_ids
from pipeline.integrity import verify_file
from pipeline.publish import Artifact, Published, write_audit_publish

LOCATION_COLUMNS = ("latitude", "longitude")


@dataclass(frozen=True)
class FeatureKind:
    name: str
    spec: TableSpec
    id_column: str
    feature_columns: tuple[str, ...]
    location_columns: tuple[str, ...] = ()
    check_prefix: str = ""  # names of its audits: user_features_are_finite, …


USERS = FeatureKind("users", USER_FEATURES, "user_id", tuple(USER_FEATURES.column_names[1:]), (), "user_features")
RESTAURANTS = FeatureKind("restaurants", RESTAURANT_FEATURES, "restaurant_id",
                          tuple(RESTAURANT_FEATURES.column_names[3:]), LOCATION_COLUMNS, "restaurant_features")


@dataclass
class FeatureSnapshot:
    """A feature table in memory: ids (sorted), float32 values row-major, optional coordinates."""

    kind: str
    ids: np.ndarray
    values: np.ndarray
    locations: np.ndarray | None = None
    version: str = ""
    ids_version: str = ""
    _index: IdIndex | None = field(default=None, repr=False)

    @property
    def index(self) -> IdIndex:
        if self._index is None:
            self._index = IdIndex(self.ids)
        return self._index

    def invalid_location_rows(self) -> np.ndarray:
        """Rows whose coordinates are not finite or not on the globe."""
        if self.locations is None:
            return np.empty(0, np.int64)
        lat, lon = self.locations[:, 0], self.locations[:, 1]
        ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        return np.flatnonzero(~ok)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def read_source_features(path: str | Path, kind: FeatureKind) -> FeatureSnapshot:
    """Read a reference-format feature file: validate, sort by id, cast features to float32.

    Raises :class:`~pipeline.data.schema.SchemaError` for a missing or mistyped column, and
    ``ValueError`` naming the file for null or duplicate ids (a click could not be resolved).
    NaN/inf values are kept and counted: the blocking checks on the snapshot reject them.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"feature file not found: {path}")
    kind.spec.validate(pq.read_schema(path), str(path))
    columns = [kind.id_column, *kind.location_columns, *kind.feature_columns]
    frame = pl.read_parquet(path, columns=columns).sort(kind.id_column)
    id_column = frame[kind.id_column]
    if id_column.null_count():
        raise ValueError(f"{path}: column '{kind.id_column}' has {id_column.null_count()} null ids")
    ids = id_column.cast(pl.Int64).to_numpy()
    if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
        dup = ids[1:][ids[1:] == ids[:-1]]
        raise ValueError(
            f"{path}: column '{kind.id_column}' has {len(dup)} duplicate ids (first: {int(dup[0])})"
        )
    # Nulls become NaN so the finiteness check counts them with NaN and inf.
    values = np.ascontiguousarray(
        frame.select(pl.col(c).cast(pl.Float32).fill_null(float("nan")) for c in kind.feature_columns)
        .to_numpy(), dtype=np.float32)
    locations = None
    if kind.location_columns:
        locations = np.ascontiguousarray(
            frame.select(pl.col(c).cast(pl.Float64).fill_null(float("nan"))
                         for c in kind.location_columns).to_numpy())
    extra = (locations,) if locations is not None else ()
    return FeatureSnapshot(kind.name, ids, values, locations,
                           version=_digest(ids, values, *extra), ids_version=_digest(ids))


SNAPSHOT_FILE = "snapshot.arrow"


def snapshot_audits(snapshot: FeatureSnapshot, kind: FeatureKind) -> list[AuditResult]:
    """The checks a snapshot must pass to be published: every feature finite and, for
    restaurants, every location on the globe. A failure names the column, an id and its value."""
    bad = ~np.isfinite(snapshot.values)
    counts = {f"f{i:02d}": int(n) for i, n in enumerate(bad.sum(axis=0)) if n}
    description = ""
    if counts:
        row, col = map(int, np.argwhere(bad)[0])
        description = (f"{sum(counts.values())} non-finite values (by column: {counts}); first: "
                       f"{kind.id_column} {int(snapshot.ids[row])}, {kind.feature_columns[col]} = "
                       f"{snapshot.values[row, col]}")
    results = [AuditResult(f"{kind.check_prefix}_are_finite", not counts,
                           {"non_finite_values": sum(counts.values()), "columns_with_non_finite": counts},
                           description)]
    if kind.location_columns:
        invalid = snapshot.invalid_location_rows()
        where = ""
        if len(invalid) and snapshot.locations is not None:  # rows are invalid only where there are locations
            row = int(invalid[0])
            lat, lon = snapshot.locations[row].tolist()
            where = (f"{len(invalid)} rows with a location off the globe or not finite; first: "
                     f"{kind.id_column} {int(snapshot.ids[row])} at ({lat}, {lon})")
        results[0].metadata["invalid_locations"] = len(invalid)
        results.append(AuditResult(f"{kind.check_prefix}_locations_valid", not len(invalid),
                                   {"invalid_locations": len(invalid)}, where))
    return results


def _snapshot_table(snapshot: FeatureSnapshot, kind: FeatureKind) -> pa.Table:
    columns = {kind.id_column: snapshot.ids}
    if snapshot.locations is not None:
        for i, name in enumerate(kind.location_columns):
            columns[name] = snapshot.locations[:, i]
    for i, name in enumerate(kind.feature_columns):
        columns[name] = snapshot.values[:, i]
    return pa.table(columns).replace_schema_metadata(
        {"kind": snapshot.kind, "version": snapshot.version, "ids_version": snapshot.ids_version})


def shrink_audit(candidate: FeatureSnapshot, path: str | Path, kind: FeatureKind,
                 guard: ShrinkGuard) -> AuditResult:
    """The candidate against the snapshot live at ``path`` (call with the artifact's lock held):
    refused when empty, or when it has fewer rows or lacks more ids than ``guard`` allows."""
    try:
        live = Artifact(path).live()
    except FileNotFoundError:
        live = None
    live_rows = dropped = None
    if live is not None:
        live_ids = read_ipc(live / SNAPSHOT_FILE).column(kind.id_column).to_numpy()
        live_rows, dropped = len(live_ids), dropped_ids(live_ids, candidate.ids)
    return guard.audit(f"{kind.check_prefix}_not_shrunk", [(kind.name, len(candidate.ids), live_rows, dropped)])


def publish_snapshot(snapshot: FeatureSnapshot, path: str | Path, kind: FeatureKind,
                     guard: ShrinkGuard | None = None) -> Published:
    """Write ``snapshot`` as a candidate, audit the candidate as written (read back from disk)
    and against the live snapshot (``guard``: the shrink rule, default: the default fraction,
    no shrink allowed), and publish it as the version named by its content digest;
    :class:`Rejected` if it fails."""
    guard = guard or ShrinkGuard()

    def write(staging: Path) -> None:
        write_ipc(_snapshot_table(snapshot, kind), staging / SNAPSHOT_FILE)

    def audit(staging: Path, _) -> list[AuditResult]:
        written = _read_snapshot_file(staging / SNAPSHOT_FILE, kind)
        return [*snapshot_audits(written, kind), shrink_audit(written, path, kind, guard)]

    return write_audit_publish(
        path, write, audit, version=snapshot.version,
        record={"kind": kind.name, "content_version": snapshot.version, "ids_version": snapshot.ids_version,
                "rows": len(snapshot.ids)})


def _read_snapshot_file(path: Path, kind: FeatureKind) -> FeatureSnapshot:
    table = read_ipc(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}

    def matrix(names: tuple[str, ...]) -> np.ndarray:
        return np.column_stack([table.column(c).to_numpy() for c in names])

    values = matrix(kind.feature_columns).astype(np.float32, copy=False)
    locations = matrix(kind.location_columns) if kind.location_columns else None
    return FeatureSnapshot(kind.name, table.column(kind.id_column).to_numpy(),
                           np.ascontiguousarray(values), locations,
                           version=meta.get("version", ""), ids_version=meta.get("ids_version", ""))


def _snapshot_version_dir(path: str | Path, kind: FeatureKind, version: str | None) -> Path:
    artifact = Artifact(path)
    try:
        return artifact.version_path(version) if version else artifact.live()
    except FileNotFoundError as missing:
        hint = "" if version else f" (materialize {kind.name} features first)"
        raise FileNotFoundError(f"{kind.name} feature snapshot: {missing}{hint}") from None


def load_snapshot(path: str | Path, kind: FeatureKind, version: str | None = None,
                  verify: bool = True) -> FeatureSnapshot:
    """The live snapshot published at ``path`` (or the kept ``version``), its file checked
    against the crc32 recorded at publish time."""
    directory = _snapshot_version_dir(path, kind, version)
    file = verify_file(directory, SNAPSHOT_FILE) if verify else directory / SNAPSHOT_FILE
    return _read_snapshot_file(file, kind)


def load_id_index(path: str | Path, kind: FeatureKind) -> tuple[IdIndex, str]:
    """Only the id column of the live snapshot, as an :class:`IdIndex`, and its ``ids_version``."""
    directory = _snapshot_version_dir(path, kind, None)
    table = read_ipc(directory / SNAPSHOT_FILE)
    meta = table.schema.metadata or {}
    return IdIndex(table.column(kind.id_column).to_numpy()), meta.get(b"ids_version", b"").decode()
