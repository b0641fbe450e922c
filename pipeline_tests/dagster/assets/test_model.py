"""The model assets on a test instance: train → gate → publish → export, and what guards each step."""

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.audits import AuditResult, Rejected
from pipeline.defs.assets.features import user_features
from pipeline.defs.assets.model import click_model, model_exports
from pipeline.defs.resources import LocalParquetSourceResource, WarehouseResource
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.export import EXPORT_REVISION, export_torchscript, publish_export
from pipeline.publish import Artifact, write_audit_publish
from pipeline.serving.formats import MODEL_FILE
from pipeline_devtools.dagster_runs import step_failures
from pipeline_devtools.warehouse_build import build_warehouse

MODEL_ASSETS = [click_model, model_exports]


def _resources(dataset, warehouse):
    return {"source": LocalParquetSourceResource(dataset_dir=str(dataset.root), start_date="2026-01-01"),
            "warehouse": WarehouseResource(root=str(warehouse.root))}


def _run(dataset, warehouse, instance, assets=MODEL_ASSETS, **config):
    run_config = {"ops": {"click_model": {"config": {"batch_size": 512, "threads": 1, **config}}}}
    return dg.materialize(assets, resources=_resources(dataset, warehouse), instance=instance,
                          run_config=run_config if click_model in assets else None, raise_on_error=False)


def _metadata(result, asset):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _failure(result) -> str:
    return step_failures(result)


def test_train_evaluate_export_with_plotted_metadata(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500)
    with dg.instance_for_test() as instance:
        result = _run(tiny_dataset, warehouse, instance, mode="full", epochs=4, lr=0.003)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"click_model_is_finite": True, "not_a_retired_model": True,
                          "accuracy_meets_reference_bar": True, "not_worse_than_champion": True,
                          "torchscript_matches_eager": True, "exported_program_matches_eager": True,
                          "onnx_matches_eager": True}
        model = _metadata(result, "click_model")
        # the newest of the 3 days is held out for model selection: 2 days trained, 4 epochs scored on it
        assert model["rows_trained"] == 4 * 8_000 and model["partitions_in_model"] == 2
        assert [v["epoch"] for v in model["validation_by_epoch"]] == [0, 1, 2, 3]
        assert model["selected_epoch"] in range(4) and model["validation_rows"] == 4_000
        assert model["validation_log_loss"] == min(v["validation_log_loss"] for v in model["validation_by_epoch"])
        assert model["epochs"] == 4 and model["rows_per_s"] > 0 and model["train_loss"] < 0.69
        assert model["version"] == Artifact(warehouse.checkpoint).live_version()
        evaluation = _metadata(result, "model_evaluation")
        assert evaluation["accuracy"] > 0.8 and evaluation["rows"] == 4_000
        assert "| probability |" in evaluation["calibration"]
        export = _metadata(result, "model_exports")
        assert export["parity_difference"] <= 1e-5 and export["max_abs_diff"] < 1e-4
        assert export["served_format"] in ("torchscript", "exported_program", "onnx")
        assert all(export[f"{fmt}_{q}_ms_{n}"] > 0 for fmt in ("torchscript", "exported_program", "onnx")
                   for q in ("p50", "p99") for n in (20, 70, 1000))
        assert export["checkpoint_version"] == model["version"]
        record = Artifact(warehouse.export).record()
        assert record["feature_versions"] == model["feature_versions"] and len(record["probe"]["x"]) == 16

        # the held-out day is new to the model of record: the next incremental run scores it, then trains on it
        held_out = _run(tiny_dataset, warehouse, instance)
        assert held_out.success and _metadata(held_out, "click_model")["days_trained"] == ["2026-01-03"]
        model, export = _metadata(held_out, "click_model"), _metadata(held_out, "model_exports")
        assert model["prequential_accuracy"] > 0.8

        # the next incremental run has nothing new: it trains nothing, publishes nothing, and
        # reports the live versions again (same data versions, their recorded checks)
        again = _run(tiny_dataset, warehouse, instance)
        assert again.success and _metadata(again, "click_model")["partitions_trained"] == 0
        assert _metadata(again, "click_model")["version"] == model["version"]
        assert _metadata(again, "model_exports")["version"] == export["version"]
        assert all(e.passed for e in again.get_asset_check_evaluations())
        assert Artifact(warehouse.checkpoint).live_version() == model["version"]
        assert Artifact(warehouse.export).live_version() == export["version"]


def test_a_model_below_the_accuracy_bar_is_never_published(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500)
    with dg.instance_for_test() as instance:
        result = _run(tiny_dataset, warehouse, instance, lr=1e-9)  # learns nothing
        assert not result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert checks["click_model_is_finite"].passed and not checks["accuracy_meets_reference_bar"].passed
        assert checks["accuracy_meets_reference_bar"].metadata["accuracy"].value < 0.7
        assert "held-out accuracy 0." in _failure(result) and "< 0.7" in _failure(result)
        assert result.get_asset_materialization_events() == []
    assert Artifact(warehouse.checkpoint).live_version() is None
    assert Artifact(warehouse.export).live_version() is None


def test_a_failed_parity_check_leaves_the_served_model_in_place(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500)
    with dg.instance_for_test() as instance:
        assert _run(tiny_dataset, warehouse, instance, mode="full", epochs=2, lr=0.003).success
    live = Artifact(warehouse.export).live_version()
    served = warehouse.torchscript.read_bytes()
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    sample = torch.zeros(64, 40)
    sample[3, 5] = float("nan")  # a probe the export cannot match: the parity check fails
    with pytest.raises(Rejected, match="torchscript_matches_eager: torchscript: logits differ by nan"):
        publish_export(model, warehouse.export, sample, record={})
    assert Artifact(warehouse.export).live_version() == live and warehouse.torchscript.read_bytes() == served
    assert Artifact(warehouse.export).versions() == [live]


def test_an_export_with_fewer_formats_than_today_is_redone_for_the_same_checkpoint(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500)
    with dg.instance_for_test() as instance:
        assert _run(tiny_dataset, warehouse, instance, mode="full", epochs=2, lr=0.003).success
        checkpoint = Artifact(warehouse.checkpoint).live_version()
        model, _ = load_checkpoint_model(warehouse.checkpoint)
        # the live export as the previous code published it: TorchScript only, its one check, this checkpoint
        write_audit_publish(warehouse.export, lambda staging: export_torchscript(model, staging / MODEL_FILE),
                            lambda staging, _: [AuditResult("torchscript_matches_eager", True)],
                            record={"checkpoint_version": checkpoint, "format": "torchscript"})
        result = _run(tiny_dataset, warehouse, instance, assets=[model_exports])
        assert result.success, _failure(result)
        assert {e.check_name for e in result.get_asset_check_evaluations()} == {
            "torchscript_matches_eager", "exported_program_matches_eager", "onnx_matches_eager"}
        record = Artifact(warehouse.export).record()
        assert set(record["formats"]) == {"torchscript", "exported_program", "onnx"}
        assert record["checkpoint_version"] == checkpoint and record["export_revision"] == EXPORT_REVISION
        # the same again: kept as it is
        live = Artifact(warehouse.export).live_version()
        assert _run(tiny_dataset, warehouse, instance, assets=[model_exports]).success
        assert Artifact(warehouse.export).live_version() == live
        # all three formats, but of an older revision (ONNX's graph of [n, 40] rows): redone
        old = {k: v for k, v in record.items() if k not in ("export_revision", "files")}
        source = Artifact(warehouse.export).version_path(live)
        write_audit_publish(warehouse.export, lambda staging: [shutil.copy(source / f["file"], staging / f["file"])
                                                               for f in record["formats"].values()],
                            lambda staging, _: [], record=old)
        assert _run(tiny_dataset, warehouse, instance, assets=[model_exports]).success
        assert Artifact(warehouse.export).record()["export_revision"] == EXPORT_REVISION


def test_export_uses_the_features_the_model_was_trained_on_or_fails(dataset_copy, tmp_path):
    warehouse = build_warehouse(dataset_copy, tmp_path / "wh", chunk_rows=1500)
    resources = _resources(dataset_copy, warehouse)
    frame = pd.read_parquet(dataset_copy.user_features)

    def new_user_snapshot(instance):
        frame["f00"] = frame["f00"] + np.float32(0.5)
        dataset_copy.user_features.unlink()
        frame.to_parquet(dataset_copy.user_features)
        assert dg.materialize([user_features], resources=resources, instance=instance).success

    with dg.instance_for_test() as instance:
        assert _run(dataset_copy, warehouse, instance, assets=[click_model], mode="full", epochs=2, lr=0.003).success
        trained_on = load_checkpoint_model(warehouse.checkpoint)[1].versions["users"]
        new_user_snapshot(instance)
        new_user_snapshot(instance)  # two new snapshots: the one trained on is no longer kept
        result = _run(dataset_copy, warehouse, instance, assets=[model_exports])
        assert not result.success
        assert f"version {trained_on} of" in _failure(result) and "is not kept any more" in _failure(result)
        assert Artifact(warehouse.export).live_version() is None

    warehouse = build_warehouse(dataset_copy, tmp_path / "second", chunk_rows=1500)
    resources = _resources(dataset_copy, warehouse)
    with dg.instance_for_test() as instance:
        assert _run(dataset_copy, warehouse, instance, assets=[click_model], mode="full", epochs=2, lr=0.003).success
        trained_on = load_checkpoint_model(warehouse.checkpoint)[1].versions["users"]
        new_user_snapshot(instance)  # the snapshot trained on is now the previous one, still kept
        assert _run(dataset_copy, warehouse, instance, assets=[model_exports]).success
        record = Artifact(warehouse.export).record()
        assert record["feature_versions"]["users"] == trained_on != Artifact(warehouse.user_features).live_version()


def test_the_reference_constraints_run_config_is_the_benchmark_s_and_a_valid_click_model_config():
    import yaml

    from pipeline.defs.assets.model import ClickModelConfig
    from pipeline.model.training import REFERENCE_CONSTRAINTS

    path = Path(__file__).parents[3] / "deploy" / "run_configs" / "reference_constraints.yaml"
    config = yaml.safe_load(path.read_text())["ops"]["click_model"]["config"]
    assert config == REFERENCE_CONSTRAINTS
    train_config = ClickModelConfig(**config).to_train_config()
    assert (train_config.lr, train_config.epochs, train_config.batch_size) == (1e-8, 5, 1024)
