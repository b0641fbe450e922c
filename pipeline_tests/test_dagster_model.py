"""The model assets on a test instance: train → evaluate → export, and the checks that guard them."""

import dagster as dg

from pipeline.defs.assets.model import click_model, model_evaluation, torchscript_model
from pipeline.defs.checks import accuracy_meets_reference_bar
from pipeline.defs.resources import LocalParquetSourceResource, WarehouseResource
from pipeline_tests.conftest import build_warehouse

MODEL_ASSETS = [click_model, model_evaluation, torchscript_model, accuracy_meets_reference_bar]


def _run(tiny_dataset, warehouse, instance, **config):
    resources = {"source": LocalParquetSourceResource(dataset_dir=str(tiny_dataset.root), start_date="2026-01-01"),
                 "warehouse": WarehouseResource(root=str(warehouse.root))}
    run_config = {"ops": {"click_model": {"config": {"batch_size": 512, "threads": 1, **config}}}}
    return dg.materialize(MODEL_ASSETS, resources=resources, instance=instance, run_config=run_config,
                          raise_on_error=False)


def _metadata(result, asset):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_train_evaluate_export_with_plotted_metadata(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500)
    with dg.instance_for_test() as instance:
        result = _run(tiny_dataset, warehouse, instance, mode="full", epochs=4, lr=0.003)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"accuracy_meets_reference_bar": True, "torchscript_matches_eager": True}
        model = _metadata(result, "click_model")
        assert model["rows_trained"] == 4 * 12_000 and model["partitions_in_model"] == 3
        assert model["epochs"] == 4 and model["rows_per_s"] > 0 and model["train_loss"] < 0.69
        evaluation = _metadata(result, "model_evaluation")
        assert evaluation["accuracy"] > 0.8 and evaluation["rows"] == 4_000
        assert "| probability |" in evaluation["calibration"]
        export = _metadata(result, "torchscript_model")
        assert export["max_abs_diff"] <= 1e-5 and export["latency_p50_ms"] > 0
        assert warehouse.torchscript.exists()

        # the next incremental run has nothing new: it trains nothing and says so
        again = _run(tiny_dataset, warehouse, instance)
        assert again.success and _metadata(again, "click_model")["partitions_trained"] == 0


def test_a_model_below_the_accuracy_bar_is_not_exported(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500)
    with dg.instance_for_test() as instance:
        result = _run(tiny_dataset, warehouse, instance, lr=1e-9)  # learns nothing
        assert not result.success
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "accuracy_meets_reference_bar" and not check.passed
        assert check.metadata["accuracy"].value < 0.7
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized == {"click_model", "model_evaluation"}
    assert not warehouse.torchscript.exists()
