"""The feature snapshot assets: a snapshot with non-finite values is rejected and the good one stays live."""

import dagster as dg
import numpy as np
import pandas as pd

from pipeline.data.features import USERS, load_snapshot
from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline_devtools.dagster_runs import local_resources, materialization_metadata, step_failures

ALL = [user_features, restaurant_features, raw_clicks, processed_clicks]


def test_nan_features_are_rejected_and_the_good_snapshot_stays_live(dataset_copy, tmp_path):
    resources = local_resources(dataset_copy, tmp_path / "warehouse")
    with dg.instance_for_test() as instance:
        assert dg.materialize(ALL[:2], resources=resources, instance=instance).success
        good = load_snapshot(tmp_path / "warehouse/features/users", USERS)
        frame = pd.read_parquet(dataset_copy.user_features)
        frame.loc[7, "f12"] = np.nan
        frame.loc[8, "f00"] = np.inf
        dataset_copy.user_features.unlink()
        frame.to_parquet(dataset_copy.user_features)
        result = dg.materialize(ALL, partition_key="2026-01-01", resources=resources, instance=instance,
                                raise_on_error=False)
        assert not result.success
        evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}
        check = evaluation["user_features_are_finite"]
        assert not check.passed and check.metadata["non_finite_values"].value == 2
        assert check.metadata["columns_with_non_finite"].value == {"f00": 1, "f12": 1}
        assert "rejected candidate" in step_failures(result)
        assert "user_id 7, f12 = nan" in step_failures(result)
        assert materialization_metadata(instance, "processed_clicks", "2026-01-01") is None
    assert not (tmp_path / "warehouse/processed_clicks/date=2026-01-01").exists()
    live = load_snapshot(tmp_path / "warehouse/features/users", USERS)  # the good one, still in use
    assert live.version == good.version and np.isfinite(live.values).all()
