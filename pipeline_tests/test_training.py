"""Training: incremental vs full bookkeeping, resuming, quality, evaluation, export."""

import warnings

import numpy as np
import pytest
import torch

from pipeline.data.clicks import read_manifest
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import TrainingState
from pipeline.model.evaluate import evaluate_files
from pipeline.model.export import export_torchscript, verify_torchscript
from pipeline.model.train import TrainConfig, load_model, train
from pipeline_tests.conftest import build_warehouse

FAST = dict(batch_size=512, threads=1)


def _quiet(message):
    pass


@pytest.fixture
def warehouse(tiny_dataset, tmp_path):
    return build_warehouse(tiny_dataset, tmp_path / "warehouse", chunk_rows=1500)


def test_incremental_trains_each_new_day_once_and_scores_it_first(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    checkpoint = warehouse.checkpoint
    state, report = train(warehouse, checkpoint, TrainConfig(**FAST), log=_quiet)
    assert report.days == ["2026-01-01", "2026-01-02"] and report.rows == 8_000
    assert state.trained == {"2026-01-01": 4_000, "2026-01-02": 4_000}
    assert [p["day"] for p in report.prequential] == report.days
    first_day_accuracy = report.prequential[0]["prequential_accuracy"]

    # nothing new: nothing trained, nothing changed
    weights = {k: v.clone() for k, v in state.model.items()}
    state, report = train(warehouse, checkpoint, TrainConfig(**FAST), log=_quiet)
    assert report.days == [] and report.rows == 0
    assert all(torch.equal(weights[k], v) for k, v in state.model.items())

    # a new day arrives: only it is trained, warm-started, and scored before training
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)
    state, report = train(warehouse, checkpoint, TrainConfig(**FAST), log=_quiet)
    assert report.days == ["2026-01-03"] and report.rows == 4_000
    assert sorted(state.trained) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert [h["day"] for h in state.history] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert report.prequential[0]["prequential_accuracy"] > first_day_accuracy  # it learned something
    assert state.versions["users_ids"] == read_manifest(warehouse.processed_clicks("2026-01-03"))["users_ids_version"]


def test_full_retrain_uses_every_row_of_the_window_every_epoch(warehouse):
    state, report = train(warehouse, warehouse.checkpoint,
                          TrainConfig(mode="full", epochs=3, window_start="2026-01-02", **FAST), log=_quiet)
    assert report.days == ["2026-01-02", "2026-01-03"] * 3
    assert report.rows == 3 * 8_000 and len(report.epoch_seconds) == 3
    assert state.trained == {"2026-01-02": 4_000, "2026-01-03": 4_000}
    # chunks of 1500, 1500, 1000 rows → 3 + 3 + 2 batches of 512, per day and epoch
    assert state.rows_seen == 24_000 and state.steps == 3 * 2 * (3 + 3 + 2)
    assert report.prequential == []  # a fresh model has no "new" day to score


def test_mismatched_architecture_and_stale_partitions_are_refused(warehouse, tiny_dataset):
    train(warehouse, warehouse.checkpoint, TrainConfig(**FAST), log=_quiet)
    with pytest.raises(ValueError, match="architecture .* differs"):
        train(warehouse, warehouse.checkpoint, TrainConfig(hidden=(32, 16), **FAST), log=_quiet)
    manifest_path = warehouse.processed_clicks("2026-01-02") / "_manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace(read_manifest(
        warehouse.processed_clicks("2026-01-02"))["users_ids_version"], "other"))
    with pytest.raises(ValueError, match=r"\['2026-01-02'\] were resolved against other feature ids"):
        train(warehouse, warehouse.root / "other.pt", TrainConfig(**FAST), log=_quiet)


def test_an_unfinished_run_resumes_only_with_the_same_settings(warehouse):
    config = TrainConfig(mode="full", epochs=2, checkpoint_every_chunks=1, **FAST)
    state, _ = train(warehouse, warehouse.checkpoint, config, log=_quiet)
    # forge an interruption: an unfinished cursor in the checkpoint
    from pipeline.model.checkpoint import Cursor
    from pipeline.model.train import _fingerprint
    plan = [(0, "2026-01-01")]
    state.cursor = Cursor("full", plan, fingerprint=_fingerprint(config, plan))
    state.save(warehouse.checkpoint)
    with pytest.raises(ValueError, match="unfinished full run .* set restart=true"):
        train(warehouse, warehouse.checkpoint, TrainConfig(lr=0.01, **FAST), log=_quiet)
    with pytest.raises(ValueError, match="unfinished full run"):
        load_model(warehouse.checkpoint)
    _, report = train(warehouse, warehouse.checkpoint, TrainConfig(restart=True, **FAST), log=_quiet)
    assert report.days == []  # the full run had trained every day already
    assert TrainingState.load(warehouse.checkpoint).cursor is None
    load_model(warehouse.checkpoint)


def test_trained_model_beats_all_zeros_on_the_test_files(tiny_dataset, warehouse):
    train(warehouse, warehouse.checkpoint, TrainConfig(mode="full", epochs=4, lr=3e-3, **FAST), log=_quiet)
    model, _ = load_model(warehouse.checkpoint)
    result = evaluate_files(model, tiny_dataset.test_files(), FeatureTables.load(warehouse))
    assert result["rows"] == 4_000 and sum(result["dropped"].values()) == 0
    assert result["accuracy"] > result["all_zeros_accuracy"] + 0.2
    assert result["accuracy"] > 0.8 and result["auc"] > 0.9
    assert sum(row["rows"] for row in result["calibration"]) == 4_000


def test_torchscript_export_matches_eager_in_a_fresh_process_without_warnings(warehouse, tmp_path):
    train(warehouse, warehouse.checkpoint, TrainConfig(**FAST), log=_quiet)
    model, _ = load_model(warehouse.checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the narrow filter must cover TorchScript's
        size = export_torchscript(model, tmp_path / "model.pt")
    assert size > 100_000
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 2, (2048, 40)).astype(np.float32))
    verified = verify_torchscript(tmp_path / "model.pt", model, x, candidates=1000)
    assert verified["shape_ok"] and not verified["imported_project"]
    assert verified["max_abs_diff"] <= 1e-5
    assert 0 < verified["latency_p50_ms"] < 100
