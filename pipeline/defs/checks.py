"""Blocking checks: no NaN, inf or bad locations reach processing; no model below the bar is exported."""

import json

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


ACCURACY_BAR = 0.7  # the reference's bar for test accuracy


@dg.asset_check(asset="model_evaluation", blocking=True)
def accuracy_meets_reference_bar(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Test accuracy is at least the reference's 0.7; below it, the model is not exported."""
    evaluation = json.loads(warehouse.layout().evaluation.read_text())
    return dg.AssetCheckResult(
        passed=evaluation["accuracy"] >= ACCURACY_BAR,
        metadata={"accuracy": evaluation["accuracy"], "bar": ACCURACY_BAR,
                  "all_zeros_accuracy": evaluation["all_zeros_accuracy"]})
