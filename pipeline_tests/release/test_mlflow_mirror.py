"""The MLflow mirror against a real local tracking store: a training run per checkpoint, its export
registered, the roles as aliases that follow a promotion; a store that is down costs a warning only."""

import os
import time

import pytest

from pipeline.model.training import TrainConfig, train
from pipeline.release import mlflow_mirror
from pipeline.release.exporting import export_roles
from pipeline.release.gate import release_gate, summary
from pipeline.release.operations import promote
from pipeline.release.registry import Registry
from pipeline_devtools.warehouse_build import build_warehouse

pytest.importorskip("mlflow")


def _train_and_mirror(warehouse, dataset, mirror):
    result = train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda m: None,
                   gate=release_gate(warehouse, dataset.test_files(), "accuracy_meets_reference_bar"))
    version = result.published.version
    roles = Registry(warehouse.registry).roles()
    mirror.log_training(version, {"lr": 2e-3, "mode": "incremental"}, result.report.prequential,
                        summary(result.published.read_json("evaluation.json")), {"role": roles.role_of(version)})
    _, made, _ = export_roles(warehouse, 120)
    for export in made.values():
        mirror.log_export(export.record["checkpoint_version"], export.path)
    mirror.mirror_roles(roles)
    return version


def test_runs_exports_and_roles_are_mirrored_as_aliases(tiny_dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    warnings = []
    mirror = mlflow_mirror.mirror(uri, warnings.append)
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    champion = _train_and_mirror(warehouse, tiny_dataset, mirror)
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)
    challenger = _train_and_mirror(warehouse, tiny_dataset, mirror)
    assert warnings == []

    client = MlflowClient(uri)
    alias = lambda name: client.get_model_version_by_alias("click_model", name).tags[mlflow_mirror.VERSION_TAG]  # noqa: E731
    assert (alias("champion"), alias("challenger")) == (champion, challenger)
    [run] = client.search_runs([client.get_experiment_by_name("click_model").experiment_id],
                               f"tags.`{mlflow_mirror.VERSION_TAG}` = '{challenger}'")
    assert run.data.params["lr"] == "0.002" and run.data.metrics["accuracy"] > 0.8
    assert [m.step for m in client.get_metric_history(run.info.run_id, "prequential_accuracy")] == [0]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "export")} >= {"export/model.onnx"}

    promote(warehouse, challenger, "canary passed", "alice")
    mirror.mirror_roles(Registry(warehouse.registry).roles())
    assert alias("champion") == challenger
    with pytest.raises(Exception, match="challenger"):
        alias("challenger")  # no challenger now: the alias is gone


def test_a_store_that_is_down_costs_a_bounded_warning(monkeypatch):
    for variable in mlflow_mirror.HTTP_BOUNDS:
        monkeypatch.delenv(variable, raising=False)
    mlflow_mirror.bound_http(os.environ)  # as the entry points do (monkeypatch restores the environment)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    warnings = []
    mirror = mlflow_mirror.mirror("http://user:hunter2@127.0.0.1:9", warnings.append)
    started = time.monotonic()
    mirror.log_training("v1", {"lr": 1}, [], {"accuracy": 0.9}, {})
    assert time.monotonic() - started < 30
    assert len(warnings) == 1 and "MLflow (training run) skipped" in warnings[0] and "hunter2" not in warnings[0]
    assert mlflow_mirror.mirror("", warnings.append) is None
