"""Metrics against brute-force definitions."""

import itertools

import numpy as np
import pytest

from pipeline.model.metrics import MetricStream, roc_auc


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
