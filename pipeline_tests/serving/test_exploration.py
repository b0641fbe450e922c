"""ε-exploration: off leaves the answer alone; on, the logged propensities are the frequencies with
which each item shows at its slot."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pipeline.serving.exploration import explore


def test_off_or_impossible_leaves_the_answer_alone():
    order = np.array([3, 1, 4])
    rng = np.random.default_rng(0)
    for epsilon, candidates, shown in ((0.0, 10, order), (0.5, 3, order), (0.5, 10, order[:1])):
        explored, propensities, slot = explore(shown, candidates, epsilon, rng)
        assert explored is shown and propensities is None and slot is None


def test_the_logged_propensities_are_the_frequencies_of_each_item_at_its_slot():
    order, candidates, epsilon, draws = np.array([7, 2, 9, 0, 5, 3]), 10, 0.3, 40_000
    rng = np.random.default_rng(1)
    seen: Counter = Counter()
    logged: dict = {}
    explored_slots = Counter()
    for _ in range(draws):
        shown, propensities, slot = explore(order, candidates, epsilon, rng)
        for position, (item, p) in enumerate(zip(shown.tolist(), propensities.tolist(), strict=True)):
            seen[(position, item)] += 1
            logged.setdefault((position, item), p)
            assert logged[(position, item)] == pytest.approx(p)
        if slot is not None:
            explored_slots[slot] += 1
            assert slot > len(order) // 2 and shown[slot - 1] not in order
    for key, count in seen.items():
        assert count / draws == pytest.approx(logged[key], abs=0.01), key
    assert logged[(0, 7)] == 1.0 and logged[(5, 3)] == pytest.approx(1 - epsilon / 3)
    assert logged[(3, 1)] == pytest.approx(epsilon / (3 * 4))  # an explored item: ε / (L·m)
    assert set(explored_slots) == {4, 5, 6} and sum(explored_slots.values()) / draws == pytest.approx(epsilon, abs=0.01)
