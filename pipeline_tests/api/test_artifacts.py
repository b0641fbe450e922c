"""What the API serves, kept current: a version that could not be read for a moment is served once it
can be; one that fails its checks (a wrong width, a corrupt model, a torn geo index) stays rejected while
the previous one keeps serving; the live restaurant snapshot is held and follows the store (the
server's artifacts over real published files, a real store)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from pipeline.api.artifacts import Artifacts
from pipeline.geo.index import CELLS_FILE, TABLE_FILE, GeoIndex
from pipeline.integrity import RECORD
from pipeline.model.export import publish_export
from pipeline.model.network import ClickMLP
from pipeline.publish import Artifact, write_audit_publish
from pipeline.serving.formats import MODEL_FILE
from pipeline.store.base import FeatureTable
from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.api_process import BODY, health, load_features, metric, post, wait_for
from pipeline_devtools.published_copies import copy_warehouse
from pipeline_devtools.redis_server import free_port


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


# ----- bad artifacts never serve


def _good_record(version_dir: Path) -> dict:
    record = json.loads((version_dir / RECORD).read_text())
    return {k: record[k] for k in ("feature_versions", "input_width", "probe")}


def test_a_wrong_width_or_corrupt_model_is_rejected_once_and_the_old_one_keeps_serving(redis_api):
    api, _, warehouse = redis_api
    good = health(api.base)["model_version"]
    good_copy = warehouse.root / "good-model"  # publishing two more versions prunes this one from the artifact
    shutil.copytree(Artifact(warehouse.export).version_path(good), good_copy)
    torch.manual_seed(5)
    # an honest export of a model with 30 inputs
    narrow = publish_export(ClickMLP(input_dim=30), warehouse.export, torch.randn(32, 30), record={})
    body = wait_for(lambda: (h := health(api.base))["last_reload_failure"] and h, what="the rejection")
    assert body["last_reload_failure"]["version"] == narrow.version
    assert "input width 30" in body["last_reload_failure"]["reason"] and body["model_version"] == good
    # the same model with a record copied from the good one: it does not take 40 inputs
    forged = write_audit_publish(warehouse.export, lambda staging: shutil.copy(
        narrow.path / MODEL_FILE, staging / MODEL_FILE), lambda staging, _: [], record=_good_record(good_copy))
    wait_for(lambda: health(api.base)["last_reload_failure"]["version"] == forged.version, what="second rejection")
    assert "does not take [16, 40] inputs" in health(api.base)["last_reload_failure"]["reason"]
    # a published version whose served model file was damaged on disk afterwards
    corrupt = Artifact(warehouse.export).versions_dir / "corrupt-copy"
    shutil.copytree(good_copy, corrupt)
    record = json.loads((good_copy / RECORD).read_text())
    served = corrupt / record["formats"][record["serve"]]["file"]
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF
    served.write_bytes(bytes(data))
    os.symlink(corrupt, f"{warehouse.export}.tmp-link")
    os.replace(f"{warehouse.export}.tmp-link", warehouse.export)
    wait_for(lambda: health(api.base)["last_reload_failure"]["version"] == "corrupt-copy", what="third rejection")
    status, body, _ = post(api.base, "/recommend/7", BODY)
    assert status == 200 and health(api.base)["model_version"] == good
    assert "crc32" in health(api.base)["last_reload_failure"]["reason"]
    assert metric(api.base, "artifact_reload_failures_total", 'artifact="model"') == 3
    time.sleep(1.0)  # five more polls of the same rejected version
    log = api.stop()
    for version in (narrow.version, forged.version, "corrupt-copy"):
        assert log.count(f"rejected model version {version}") == 1, log


def test_a_torn_geo_index_is_rejected(redis_api, serving_artifacts):
    api, _, warehouse = redis_api
    tables = serving_artifacts[1]
    good = health(api.base)["geo_index_version"]
    restaurants = tables.restaurant_snapshot
    half = GeoIndex.build(restaurants.ids[::2], restaurants.locations[::2, 0], restaurants.locations[::2, 1])
    other = half.publish(warehouse.geo_index, restaurants.ids[::2])  # a whole, valid index of half the rows
    wait_for(lambda: health(api.base)["geo_index_version"] == other.version, what="the half index")
    # the table of the full index with the lookup of the half one, published with honest checksums
    full_dir = Artifact(warehouse.geo_index).version_path(good)

    def torn(staging: Path) -> None:
        shutil.copy(full_dir / TABLE_FILE, staging / TABLE_FILE)
        shutil.copy(other.path / CELLS_FILE, staging / CELLS_FILE)

    full_record = json.loads((full_dir / RECORD).read_text())
    torn_version = write_audit_publish(warehouse.geo_index, torn, lambda staging, _: [], record={
        key: full_record[key] for key in ("restaurants", "h3_resolution")}).version
    body = wait_for(lambda: (h := health(api.base))["last_reload_failure"] and h, what="the torn index rejected")
    assert body["last_reload_failure"]["artifact"] == "geo_index"
    assert body["last_reload_failure"]["version"] == torn_version
    assert body["geo_index_version"] == other.version and post(api.base, "/recommend/7", BODY)[0] == 200
    assert metric(api.base, "artifact_reload_failures_total", 'artifact="geo_index"') == 1


def test_the_live_restaurant_snapshot_is_held_and_follows_the_store(serving_artifacts, tmp_path, caplog):
    artifacts = _artifacts(serving_artifacts, tmp_path, caplog)
    tables = serving_artifacts[1]
    store, restaurants = artifacts.store, tables.restaurant_snapshot
    try:
        assert artifacts.hold_live_restaurants() and not artifacts.hold_live_restaurants()
        assert artifacts.recommender.held.snapshot_version == restaurants.version
        assert artifacts.recommender.held.present.all()
        store.publish(FeatureTable.of(tables.user_snapshot),
                      FeatureTable(restaurants.ids, restaurants.values + 1, "plus-one"))
        assert artifacts.hold_live_restaurants()
        held = artifacts.recommender.held
        row = artifacts.recommender.geo.rows_of(restaurants.ids[:1])[0]
        assert held.snapshot_version == "plus-one"
        assert (held.values[row] == restaurants.values[0] + 1).all()
        # a new model with the same geo index: a new recommender, holding the same snapshot from the start
        _publish_model(artifacts, seed=9)
        assert artifacts.refresh() and artifacts.recommender.held is held
        # a new geo index version: the snapshot is read again and placed in its rows
        half = GeoIndex.build(restaurants.ids[::2], restaurants.locations[::2, 0], restaurants.locations[::2, 1])
        half.publish(artifacts.warehouse.geo_index, restaurants.ids[::2])
        assert artifacts.refresh() and artifacts.recommender.held is None
        assert artifacts.hold_live_restaurants() and artifacts.recommender.held.snapshot_version == "plus-one"
        row = artifacts.recommender.geo.rows_of(restaurants.ids[:1])[0]
        assert (artifacts.recommender.held.values[row] == restaurants.values[0] + 1).all()
        assert artifacts.recommender.held.present.sum() == len(restaurants.ids[::2])
        # the store gone: what is held stays (requests see "features not loaded" from the store itself)
        store.close()
        os.remove(store.path)
        assert not artifacts.hold_live_restaurants()
        assert artifacts.recommender.held.snapshot_version == "plus-one"
    finally:
        artifacts.stop()


def test_a_store_that_does_not_answer_leaves_the_restaurants_unheld_and_is_said_once(serving_artifacts, tmp_path,
                                                                                      caplog):
    source = serving_artifacts[0]
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    artifacts = Artifacts(warehouse, RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2))
    caplog.set_level("INFO", logger="pipeline.api")
    assert artifacts.refresh()
    assert not artifacts.hold_live_restaurants() and not artifacts.hold_live_restaurants()
    assert artifacts.recommender.held is None
    assert caplog.text.count("restaurant features not held (requests read them from the store): redis") == 1
