"""Release decisions through the real ``pipeline`` command: promote, retire, roll back, models; a
rollback lasts (the retired model's retrain is not served again)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.audits import Rejected
from pipeline.model.training import TrainConfig, train
from pipeline.model.training.release import NOT_RETIRED_CHECK
from pipeline.publish import Artifact
from pipeline.release.exporting import export_roles
from pipeline.release.gate import release_gate
from pipeline.release.registry import Registry
from pipeline.release.switch import export_of
from pipeline_devtools.warehouse_build import build_warehouse

BIN = Path(sys.executable).parent


def _pipeline(env, *args):
    done = subprocess.run([str(BIN / "pipeline"), *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def _train(warehouse, dataset):
    return train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda m: None,
                 gate=release_gate(warehouse, dataset.test_files(), "accuracy_meets_reference_bar"))


def _serving(warehouse):
    """(champion's checkpoint served to everyone, the checkpoint training continues)."""
    export = Artifact(warehouse.export)
    return export.record(export.live_version())["checkpoint_version"], Artifact(warehouse.checkpoint).live_version()


def test_promote_then_roll_back_and_the_retired_model_is_not_trained_again(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    first = _train(warehouse, tiny_dataset).published.version
    export_roles(warehouse, 120)
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)  # day 3 arrives
    second = _train(warehouse, tiny_dataset).published.version
    export_roles(warehouse, 120)
    assert _serving(warehouse) == (first, second)  # the challenger serves no one but its canary
    env = {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "PIPELINE_OPERATOR": "alice"}

    code, out, err = _pipeline(env, "promote", second, "--reason", "canary looked good")
    assert code == 0, err
    assert json.loads(out)["switched"]["export"]["to"] == export_of(Artifact(warehouse.export), second)
    assert _serving(warehouse) == (second, second)
    code, out, err = _pipeline(env, "rollback", "model", "--reason", "complaints about sushi")
    assert code == 0, err
    assert json.loads(out)["retired"] == second and json.loads(out)["champion"] == first
    assert _serving(warehouse) == (first, first)

    # today's failure: the next incremental run retrained day 3 and served the same model again
    with pytest.raises(Rejected) as rejected:
        _train(warehouse, tiny_dataset)
    why = rejected.value.failed[0]
    assert why.name == NOT_RETIRED_CHECK and why.metadata == {"retired_version": second}
    assert "complaints about sushi" in why.description and "by alice" in why.description
    assert not warehouse.training_run.exists() and _serving(warehouse) == (first, first)

    code, out, _ = _pipeline(env, "models", "--format", "json")
    models = {m["version"]: m for m in json.loads(out)}
    assert models[first]["role"] == "champion" and models[first]["reason"].startswith("rollback from")
    assert models[second]["role"] == "retired" and models[second]["decided_by"] == "alice"
    assert models[first]["window"] == tiny_dataset.days()[:2] and models[second]["trained_days"] == 3
    assert models[second]["metrics"]["accuracy"] > 0.5 and models[second]["lineage"]
    code, table, _ = _pipeline(env, "models")
    assert code == 0 and f"{second} retired" in " ".join(table.split())

    # an operator may still bring it back, explicitly
    code, out, err = _pipeline(env, "promote", second, "--reason", "the complaints were about another app")
    assert code == 0, err
    assert _serving(warehouse)[0] == second
    assert [d.role for d in Registry(warehouse.registry).decisions()][-1] == "champion"


def test_refused_decisions_say_why_and_change_nothing(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    first = _train(warehouse, tiny_dataset).published.version
    export_roles(warehouse, 120)
    env = {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root)}
    before = Registry(warehouse.registry).version()
    for args, expected in ((("promote", first, "--reason", "x"), "already the champion"),
                           (("promote", "nope", "--reason", "x"), "checkpoint nope is not kept"),
                           (("retire", "nope", "--reason", "x"), "nope is not serving"),
                           (("rollback", "model"), "no former champion")):
        code, out, err = _pipeline(env, *args)
        assert code == 1 and out == "" and expected in err, err
    code, _, err = _pipeline(env, "promote", first)
    assert code == 2 and "--reason" in err
    assert Registry(warehouse.registry).version() == before
