"""Metrics against brute-force definitions."""

import itertools

import numpy as np
import pytest

from pipeline.model.metrics import accuracy, calibration, log_loss, roc_auc


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
    assert accuracy(logits, clicks) == 0.5
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(clicks * np.log(p) + (1 - clicks) * np.log(1 - p))
    assert log_loss(logits, clicks) == pytest.approx(expected)
    table = calibration(logits, clicks, bins=2)
    assert [row["rows"] for row in table] == [2, 2]
    assert table[1]["observed_rate"] == 0.5
    assert np.isnan(roc_auc(logits, np.ones(4)))
