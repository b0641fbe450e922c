"""A published version that could not be read for a moment is served once it can be; one that
fails its checks stays rejected (the server's artifacts over real published files and a real
SQLite store)."""

from __future__ import annotations

import os
import time

import torch

from pipeline.api.artifacts import Artifacts
from pipeline.integrity import RECORD
from pipeline.model.export import publish_export
from pipeline.model.network import ClickMLP
from pipeline.publish import Artifact
from pipeline.store.sqlite import SQLiteStore
from pipeline_tests.api_process import copy_warehouse, load_features


def _artifacts(serving_artifacts, tmp_path, caplog) -> Artifacts:
    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    store = SQLiteStore(tmp_path / "features.db")
    load_features(store, tables)
    artifacts = Artifacts(warehouse, store, poll_interval_s=0.2)
    caplog.set_level("INFO", logger="pipeline.api")
    assert artifacts.refresh() and artifacts.ready
    return artifacts


def _publish_model(artifacts: Artifacts, seed: int, width: int = 40):
    torch.manual_seed(seed)
    return publish_export(ClickMLP(input_dim=width), artifacts.warehouse.export, torch.randn(64, width), record={})


def test_a_version_briefly_unreadable_is_served_once_it_can_be_read(serving_artifacts, tmp_path, caplog):
    artifacts = _artifacts(serving_artifacts, tmp_path, caplog)
    try:
        # the version directory is renamed away right after publishing, then put back
        new = _publish_model(artifacts, seed=3)
        away = new.path.with_name(new.path.name + ".away")
        os.rename(new.path, away)
        assert not artifacts.refresh() and artifacts.model_version != new.version
        assert artifacts.last_failure.version == new.version and "not readable" in artifacts.last_failure.reason
        os.rename(away, new.path)
        assert not artifacts.refresh()  # not before its backoff
        time.sleep(0.25)
        assert artifacts.refresh() and artifacts.model_version == new.version
        assert artifacts.failures["model"] == 0 and artifacts.last_failure is None

        # the record file briefly missing, twice: the wait doubles, then it is served
        newer = _publish_model(artifacts, seed=4)
        record = newer.path / RECORD
        hidden = record.with_name("hidden-record")
        os.rename(record, hidden)
        assert not artifacts.refresh()
        time.sleep(0.25)
        assert not artifacts.refresh() and "trying again in 0.4 s" in artifacts.last_failure.reason
        os.rename(hidden, record)
        time.sleep(0.45)
        assert artifacts.refresh() and artifacts.model_version == newer.version
        assert sum("could not read model" in r.message for r in caplog.records) == 2  # once per version
    finally:
        artifacts.stop()


def test_a_version_that_fails_its_checks_stays_rejected(serving_artifacts, tmp_path, caplog):
    artifacts = _artifacts(serving_artifacts, tmp_path, caplog)
    try:
        good = artifacts.model_version
        narrow = _publish_model(artifacts, seed=5, width=30)
        for _ in range(3):
            assert not artifacts.refresh()
            time.sleep(0.25)
        assert artifacts.model_version == good and artifacts.failures["model"] == 1
        assert artifacts.last_failure.version == narrow.version and "input width 30" in artifacts.last_failure.reason
        assert sum("rejected model version" in r.message for r in caplog.records) == 1
        assert Artifact(artifacts.warehouse.export).live_version() == narrow.version
    finally:
        artifacts.stop()
