"""Blocking checks on the feature snapshots: nothing downstream runs on NaN, inf or bad locations."""

import dagster as dg

from pipeline.data.features import RESTAURANTS, USERS, FeatureKind, load_snapshot
from pipeline.defs.assets.features import restaurant_features, snapshot_path, user_features
from pipeline.defs.resources import WarehouseResource


def _finite_check_result(kind: FeatureKind, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    snapshot = load_snapshot(snapshot_path(warehouse, kind), kind)
    bad_columns = {c: n for c, n in snapshot.non_finite_counts().items() if n}
    invalid_locations = snapshot.invalid_locations()
    return dg.AssetCheckResult(
        passed=not bad_columns and not invalid_locations,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"non-finite values by column: {bad_columns}" if bad_columns else None),
        metadata={
            "non_finite_values": sum(bad_columns.values()),
            "columns_with_non_finite": dg.MetadataValue.json(bad_columns),
            "invalid_locations": invalid_locations,
        },
    )


@dg.asset_check(asset=user_features, blocking=True)
def user_features_are_finite(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Every user feature is a finite float32 (a NaN or inf would poison training)."""
    return _finite_check_result(USERS, warehouse)


@dg.asset_check(asset=restaurant_features, blocking=True)
def restaurant_features_are_finite(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Every restaurant feature is a finite float32 and every location is on the globe."""
    return _finite_check_result(RESTAURANTS, warehouse)
