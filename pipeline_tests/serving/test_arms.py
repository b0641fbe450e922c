"""The canary's split and the shadow comparison, against their definitions."""

import numpy as np
import pytest

from pipeline.serving.arms import compare, in_canary


def test_the_canary_holds_its_share_of_users_and_keeps_each_user_on_one_side():
    users = range(20_000)
    chosen = [u for u in users if in_canary(u, "v1", 0.2)]
    assert len(chosen) / 20_000 == pytest.approx(0.2, abs=0.01)
    assert chosen == [u for u in users if in_canary(u, "v1", 0.2)]  # the same users every time
    other = {u for u in users if in_canary(u, "v2", 0.2)}
    assert len(other & set(chosen)) / len(chosen) == pytest.approx(0.2, abs=0.03)  # a new challenger, new users
    assert not any(in_canary(u, "v1", 0.0) for u in range(1000)) and all(in_canary(u, "v1", 1.0) for u in range(1000))
    assert set(chosen) <= {u for u in users if in_canary(u, "v1", 0.5)}  # a larger share adds users


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("n", [2, 7, 45, 300])
def test_the_comparison_is_overlap_spearman_and_mean_difference(n):
    rng = np.random.default_rng(n)
    answered, other = rng.random(n), rng.random(n)
    size = min(n, 5)
    shown, other_top = np.argsort(-answered)[:size], np.argsort(-other)[:size]
    shadow = compare("v", answered, other, shown, other_top)
    assert shadow.overlap == len(set(shown) & set(other_top)) / size
    assert shadow.rank_correlation == pytest.approx(_spearman(answered, other), abs=1e-12)
    assert shadow.score_difference == pytest.approx(np.abs(answered - other).mean())
    assert shadow.scores.tolist() == pytest.approx(other[shown].tolist()) and shadow.scores.dtype == np.float32
    same = compare("v", answered, answered, shown, shown)
    assert (same.overlap, same.rank_correlation, same.score_difference) == (1.0, pytest.approx(1.0), 0.0)
