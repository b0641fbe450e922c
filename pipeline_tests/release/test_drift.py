"""Drift: a feature shifted by +0.5 in a new snapshot trips the check and blocks a promotion; an
unchanged snapshot does not; the challenger's scores are compared with the champion's."""

import dataclasses

import numpy as np
import pytest

from pipeline.data.features import USERS, load_snapshot, publish_snapshot
from pipeline.model.training import TrainConfig, train
from pipeline.release import drift
from pipeline.release.drift_check import measure
from pipeline_devtools.warehouse_build import build_warehouse


def test_psi_is_zero_for_the_same_sample_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=20_000)
    assert drift.psi(reference, reference) == 0.0
    assert drift.psi(reference, rng.normal(size=20_000)) < 0.01
    # the rule of thumb the thresholds follow: +0.5 sd is a moderate shift (warn), +1 sd a major one (block)
    assert drift.psi(reference, reference + 0.3) < drift.WARN < drift.psi(reference, reference + 0.5) < drift.BLOCK
    assert drift.psi(reference, reference + 1.0) > drift.BLOCK
    assert drift.psi(np.zeros(100), np.zeros(50)) == 0.0  # a constant feature that stays constant


def _new_user_snapshot(warehouse, shift: float):
    live = load_snapshot(warehouse.user_features, USERS)
    values = live.values.copy()
    values[:, 0] += np.float32(shift)
    publish_snapshot(dataclasses.replace(live, values=values, version="", _index=None), warehouse.user_features, USERS)


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_a_shifted_feature_trips_the_check_and_blocks_promotion(tiny_dataset, tmp_path, shift):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda m: None)
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500, days=0)  # the same snapshots again
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda m: None)  # a challenger
    _new_user_snapshot(warehouse, shift)

    report = measure(warehouse)
    checks = {a.name: a for a in report.audits()}
    assert report.model == report.challenger and report.score is not None
    assert len(report.features) == 40 and report.current["users"] != report.reference["users"] or shift == 0.0
    if shift:
        assert report.largest(1)[0][0] == "users/f00" and report.features["users/f00"] > drift.BLOCK
        assert not checks[drift.FEATURES_CHECK].passed and "users/f00" in checks[drift.FEATURES_CHECK].description
        assert report.blocking() and "users/f00 PSI" in report.blocking()[0]
    else:
        assert max(report.features.values()) < drift.WARN and checks[drift.FEATURES_CHECK].passed
        assert not report.blocking()
    others = [v for k, v in report.features.items() if k != "users/f00"]
    assert max(others) < drift.WARN
    assert set(report.histograms) >= {"users/f00", "score"}
    drift.publish(report, warehouse.drift)
    assert drift.latest(warehouse.drift).features == report.features
