"""Online metrics' AUCs, per model and for the shadow model on the same rows, against the numpy AUC."""

import numpy as np
import polars as pl
import pytest

from pipeline.feedback import click_events, labels
from pipeline.feedback.log_format import Impression, to_table
from pipeline.feedback.online_metrics import online_metrics, shadow_metrics
from pipeline.model.metrics import roc_auc


def test_the_shadow_model_is_scored_on_the_rows_it_scored_beside_the_answering_one():
    rng = np.random.default_rng(0)
    records = []
    for i in range(300):
        ids = rng.choice(1000, 10, replace=False).astype(np.int64)
        scores = np.sort(rng.random(10).astype(np.float32))[::-1].copy()
        shadow = ("chal", rng.random(10).astype(np.float32), 0.5, 0.1, 0.1) if i % 2 else (None,) * 5
        records.append(tuple(Impression(f"r{i}", 10**18, i % 17, "champ", "onnx", 1, "g", 1.0, 2.0, 10, 5000.0,
                                        False, None, 10, ids, scores, scores, None, None, False, 1000, *shadow)))
    clicked = [(r[0], int(r[14][j])) for r in records for j in range(10) if rng.random() < 0.3 + 0.05 * (j < 3)]
    rows = labels.label(to_table(records), click_events.table([c for c, _ in clicked], [r for _, r in clicked],
                                                              [0] * len(clicked))).rows
    assert rows["shadow_score"].null_count() == 1500 and set(rows["shadow_version"].drop_nulls()) == {"chal"}

    champion = rows.filter(pl.col("model_version") == "champ")
    assert online_metrics(rows, 1000)["champ"]["auc"] == pytest.approx(
        roc_auc(champion["score"].to_numpy(), champion["clicked"].to_numpy()))
    [pair] = shadow_metrics(rows)
    both = rows.filter(pl.col("shadow_score").is_not_null())
    assert (pair["model_version"], pair["shadow_version"], pair["rows"]) == ("champ", "chal", 1500)
    assert pair["shadow_auc"] == pytest.approx(roc_auc(both["shadow_score"].to_numpy(), both["clicked"].to_numpy()))
    assert pair["auc"] == pytest.approx(roc_auc(both["score"].to_numpy(), both["clicked"].to_numpy()))
