"""The release assets on a test instance: a retrain becomes the challenger and is exported beside the
champion; model_drift measures it; model_release judges, promotes by run config (recorded with who
and why) and refuses a decision without a reason; the judge's sensor starts only for a challenger."""

import dagster as dg

from pipeline.defs.assets.model import click_model, model_exports
from pipeline.defs.assets.release import model_drift, model_release
from pipeline.defs.sensors import release_judge_sensor
from pipeline.publish import Artifact
from pipeline.release.registry import Registry
from pipeline.release.switch import export_of
from pipeline_devtools.dagster_runs import local_resources, step_failures
from pipeline_devtools.warehouse_build import build_warehouse

TRAIN = {"ops": {"click_model": {"config": {"batch_size": 512, "threads": 1}}}}


def _metadata(result, asset):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _release(resources, instance, **config):
    return dg.materialize([model_release], resources=resources, instance=instance, raise_on_error=False,
                          run_config={"ops": {"model_release": {"config": config}}})


def test_challenger_exported_drift_measured_promoted_by_run_config(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    resources = local_resources(tiny_dataset, warehouse.root)
    model = [click_model, model_exports]
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert isinstance(release_judge_sensor(context), dg.SkipReason)  # no model at all yet
        first = dg.materialize(model, resources=resources, instance=instance, run_config=TRAIN)
        assert _metadata(first, "click_model")["role"] == "champion"
        build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)  # a new day
        second = dg.materialize(model, resources=resources, instance=instance, run_config=TRAIN)
        assert _metadata(second, "click_model")["role"] == "challenger"
        evaluation = _metadata(second, "model_evaluation")
        assert evaluation["champion_version"] == _metadata(first, "click_model")["version"]
        assert "| accuracy |" in evaluation["comparison"]
        exports = _metadata(second, "model_exports")
        roles = Registry(warehouse.registry).roles()
        assert exports["champion"] == roles.champion and exports["challenger"] == roles.challenger
        assert exports["challenger_export"] == export_of(Artifact(warehouse.export), roles.challenger)
        assert exports["checkpoint_version"] == roles.champion  # the live export is still the champion's

        drifted = dg.materialize([model_drift], resources=resources, instance=instance)
        numbers = _metadata(drifted, "model_drift")
        assert numbers["model"] == roles.challenger and numbers["max_feature_psi"] < 0.1 and "score_psi" in numbers
        assert "data:image/svg+xml" in numbers["largest_shifts"]
        checks = {e.check_name: e for e in drifted.get_asset_check_evaluations()}
        assert checks["features_below_drift_warning"].passed
        assert checks["scores_below_drift_warning"].passed == (numbers["score_psi"] <= 0.1)
        assert checks["scores_below_drift_warning"].severity == dg.AssetCheckSeverity.WARN

        request = release_judge_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert len(request.run_requests) == 1 and roles.challenger in request.run_requests[0].run_key
        judged = _release(resources, instance)
        assert judged.success and "0 canary and 0 champion requests" in _metadata(judged, "model_release")["why"]

        refused = _release(resources, instance, action="promote", version=roles.challenger)
        assert not refused.success and "promote needs a reason" in step_failures(refused)
        promoted = _release(resources, instance, action="promote", version=roles.challenger,
                            reason="offline figures are better", operator="bob")
        numbers = _metadata(promoted, "model_release")
        assert numbers["champion"] == roles.challenger and numbers["challenger"] == ""
        assert "| bob | offline figures are better |" in numbers["decisions"]
        export = Artifact(warehouse.export)
        assert export.record()["checkpoint_version"] == roles.challenger
