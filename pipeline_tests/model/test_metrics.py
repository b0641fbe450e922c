"""Metrics against brute-force definitions."""

import itertools

import numpy as np
import pytest

from pipeline.model.metrics import MetricStream, calibration_error, grouped_auc, ndcg_at, roc_auc


def _auc_brute(scores, y):
    pos = [s for s, t in zip(scores, y, strict=True) if t]
    neg = [s for s, t in zip(scores, y, strict=True) if not t]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-3, 4, 60).astype(float)  # many ties
    y = rng.random(60) < 0.4
    assert roc_auc(scores, y) == pytest.approx(_auc_brute(scores, y))


def test_accuracy_log_loss_and_calibration():
    logits = np.array([2.0, -1.0, 0.5, -3.0])
    clicks = np.array([1, 1, 0, 0])
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(clicks * np.log(p) + (1 - clicks) * np.log(1 - p))
    stream = MetricStream()
    stream.add(logits, clicks)
    numbers = stream.summary()
    assert numbers["accuracy"] == 0.5 and numbers["rows"] == 4
    assert numbers["log_loss"] == pytest.approx(expected)
    stream = MetricStream(bins=2)
    stream.add(logits, clicks)
    table = stream.calibration()
    assert [row["rows"] for row in table] == [2, 2]
    assert table[1]["observed_rate"] == 0.5
    assert np.isnan(roc_auc(logits, np.ones(4)))


def test_a_stream_of_batches_gives_the_whole_set_s_metrics():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=10_000).astype(np.float32)
    clicks = rng.random(10_000) < 1 / (1 + np.exp(-logits))
    stream = MetricStream()
    for start in range(0, 10_000, 777):
        stream.add(logits[start:start + 777], clicks[start:start + 777])
    whole = MetricStream()
    whole.add(logits, clicks)
    for key, value in whole.summary().items():
        assert stream.summary()[key] == pytest.approx(value, rel=1e-9)
    assert [r["rows"] for r in stream.calibration()] == [r["rows"] for r in whole.calibration()]
    assert stream.click_rate() == pytest.approx(clicks.mean())


def _by_group(values, groups):
    out = {}
    for value, group in zip(values, groups, strict=True):
        out.setdefault(group, []).append(value)
    return out


def test_grouped_auc_is_the_mean_of_each_group_s_own_auc():
    rng = np.random.default_rng(11)
    groups = rng.integers(0, 40, 3000)
    logits = np.round(rng.normal(size=3000), 1)  # ties within groups
    clicks = rng.random(3000) < 0.3
    expected = []
    scores, labels = _by_group(logits, groups), _by_group(clicks, groups)
    for group in scores:
        y = np.array(labels[group])
        if 0 < y.sum() < len(y):
            expected.append(roc_auc(np.array(scores[group]), y))
    mean, counted = grouped_auc(logits, clicks, groups)
    assert counted == len(expected) and mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert grouped_auc(logits, np.zeros(3000), groups) == (pytest.approx(float("nan"), nan_ok=True), 0)


def test_ndcg_ranks_each_list_by_score_and_breaks_ties_in_logged_order():
    # one list: clicks at logged positions 2 and 4; a model that puts them first scores 1
    groups = np.zeros(5, int)
    clicks = np.array([0, 1, 0, 1, 0])
    perfect = np.array([0.1, 0.9, 0.2, 0.8, 0.0])
    assert ndcg_at(5, perfect, clicks, groups) == (pytest.approx(1.0), 1)
    flat = np.zeros(5)  # ties: the logged order stands
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    assert ndcg_at(5, flat, clicks, groups)[0] == pytest.approx(dcg / (1 + 1 / np.log2(3)))
    assert ndcg_at(1, flat, clicks, groups)[0] == 0.0
    # two lists, one without a click (not counted)
    groups2 = np.array([0, 0, 0, 1, 1])
    mean, counted = ndcg_at(3, np.array([0.1, 0.5, 0.2, 0.3, 0.4]), np.array([1, 0, 0, 0, 0]), groups2)
    assert counted == 1 and mean == pytest.approx(1 / np.log2(4))


def test_calibration_error_weighs_each_bin_s_gap_by_its_rows():
    table = [{"rows": 30, "mean_predicted": 0.1, "observed_rate": 0.2},
             {"rows": 10, "mean_predicted": 0.9, "observed_rate": 0.5},
             {"rows": 0, "mean_predicted": float("nan"), "observed_rate": float("nan")}]
    assert calibration_error(table) == pytest.approx((30 * 0.1 + 10 * 0.4) / 40)
