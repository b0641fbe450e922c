"""The release gate: the first model needs only the bar; a retrain is compared with the champion on
the same data, and one that is worse is rejected, says why, and serves no one."""

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.audits import Rejected
from pipeline.feedback import labels
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.network import fused_logits
from pipeline.model.training import TrainConfig, train
from pipeline.publish import Artifact, write_audit_publish
from pipeline.release.evaluation import LoggedLists, logged_list_files, read_logged_lists
from pipeline.release.gate import COMPARISON_CHECK, release_gate
from pipeline.release.registry import Registry
from pipeline_devtools.warehouse_build import build_warehouse

ACCURACY = "accuracy_meets_reference_bar"


def _train(warehouse, dataset, **config):
    return train(warehouse, TrainConfig(**{"batch_size": 512, "threads": 1, **config}), log=lambda m: None,
                 gate=release_gate(warehouse, dataset.test_files(), ACCURACY))


def test_a_retrain_worse_than_the_champion_is_rejected_saying_which_metric_and_serves_no_one(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500)
    champion = _train(warehouse, tiny_dataset).published
    roles = Registry(warehouse.registry).roles()
    assert roles.champion == champion.version and roles.history[0].reason.startswith("the first model")
    accuracy = champion.read_json("evaluation.json")["accuracy"]
    assert accuracy > 0.8

    # the operator's poor full retrain: it clears the absolute bar, and is worse than the champion
    with pytest.raises(Rejected) as rejected:
        _train(warehouse, tiny_dataset, mode="full", epochs=1, lr=3e-4)
    failed = {a.name: a for a in rejected.value.failed}
    assert set(failed) == {COMPARISON_CHECK}  # the bar alone would have let it through
    why = failed[COMPARISON_CHECK].description
    assert f"against the champion's {accuracy:.4f}" in why and "margin 0.005" in why and "accuracy 0.7" in why
    assert failed[COMPARISON_CHECK].metadata["accuracy_change"] < -0.05

    roles = Registry(warehouse.registry).roles()
    rejection = roles.history[-1]
    assert rejection.role == "rejected" and COMPARISON_CHECK in rejection.reason and rejection.lineage
    assert roles.champion == champion.version and roles.challenger is None  # nothing new serves anyone
    assert Artifact(warehouse.checkpoint).live_version() == champion.version
    assert rejection.version not in Artifact(warehouse.checkpoint).versions()


def test_a_retrain_not_worse_becomes_the_challenger_compared_on_the_same_rows(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=1)
    first = _train(warehouse, tiny_dataset).published
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)
    second = _train(warehouse, tiny_dataset).published
    evaluation = second.read_json("evaluation.json")
    assert evaluation["champion"]["version"] == first.version
    assert evaluation["champion"]["rows"] == evaluation["rows"]  # the same held-out rows
    assert evaluation["champion"]["accuracy"] == pytest.approx(first.read_json("evaluation.json")["accuracy"])
    compared = {c["metric"]: c for c in evaluation["comparison"]}
    assert compared["accuracy"]["compared"] and not compared["ndcg_at_5"]["compared"]  # no logged lists yet
    roles = Registry(warehouse.registry).roles()
    assert (roles.champion, roles.challenger) == (first.version, second.version)
    assert Artifact(warehouse.checkpoint).live_version() == second.version  # the lineage's head


def _publish_labeled(warehouse, day, frame):
    def write(staging):
        frame.write_parquet(staging / labels.LABELED)

    write_audit_publish(warehouse.labeled_impressions(day), write, lambda staging, _: [])


def test_logged_lists_are_the_held_out_requests_re_ranked_by_the_model(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500)
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda m: None)
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    tables = FeatureTables.load(warehouse)
    rng = np.random.default_rng(4)
    rows = []
    for request in range(400):
        user = int(rng.choice(tables.user_snapshot.ids))
        shown = rng.choice(tables.restaurant_snapshot.ids, 8, replace=False)
        for rank, restaurant in enumerate(shown, 1):
            rows.append({"request_id": f"r{request}", "user_id": user, "restaurant_id": int(restaurant),
                         "rank": rank, "clicked": bool(rng.random() < 0.3), "held_out": request % 4 == 0})
    frame = pl.DataFrame(rows).with_columns(pl.col("rank").cast(pl.Int32))
    _publish_labeled(warehouse, "2026-01-05", frame)
    files = logged_list_files(warehouse)
    logged = LoggedLists(read_logged_lists(files), tables)
    assert len(logged) == 100 * 8 and logged.unresolved == 0
    figures = logged.score(model, tables)

    # independently: each held-out list scored row by row and ranked in Python
    held = frame.filter(pl.col("held_out"))
    ndcgs = []
    for _, group in held.group_by("request_id"):
        group = group.sort("rank")
        users = tables.users[tables.user_snapshot.index.rows(group["user_id"].to_numpy())]
        restaurants = tables.restaurants[tables.restaurant_snapshot.index.rows(group["restaurant_id"].to_numpy())]
        with torch.inference_mode():
            scores = fused_logits(model, torch.cat([users, restaurants], 1)).numpy()
        clicks = group["clicked"].to_numpy()
        if not clicks.any():
            continue
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:5]
        dcg = sum(clicks[i] / np.log2(position + 2) for position, i in enumerate(order))
        ideal = sum(1 / np.log2(position + 2) for position in range(min(5, int(clicks.sum()))))
        ndcgs.append(dcg / ideal)
    assert figures["logged_requests_with_clicks"] == len(ndcgs)
    assert figures["ndcg_at_5"] == pytest.approx(np.mean(ndcgs), rel=1e-5)
