"""ε-exploration: now and then a lower slot shows a restaurant the model did not rank there, so
that logged data covers more than the model's own choices (and other rankings can be estimated
from it, weighting each shown item by its logged propensity).

For an answer of ``n`` ≥ 2 restaurants, sorted by score, with ``m`` > 0 other candidates within
range, the lower slots are ranks ⌊n/2⌋+1 … n (``L`` = n - ⌊n/2⌋ of them). With probability ε, one
of them, chosen uniformly, shows one of the ``m`` others, chosen uniformly. The propensity of each
shown item, the probability the policy shows it at its slot, is logged with it:

- an upper slot's item: 1 (exploration never touches it);
- a lower slot's item the model put there: 1 - ε/L (its slot was not the one explored);
- the explored item: ε / (L·m).

Answers sorted by distance (``sort_dist``) are never explored: their order is the user's request.
"""

from __future__ import annotations

import numpy as np


def explore(order: np.ndarray, candidates: int, epsilon: float, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """``order`` (the positions, among ``candidates`` scored rows, of the ``n`` shown, best first)
    with at most one lower slot explored; the shown items' propensities (None: all 1) and the
    explored rank (1-based; None: none)."""
    n = len(order)
    others = candidates - n
    if epsilon <= 0 or n < 2 or others <= 0:
        return order, None, None
    upper = n // 2
    lower = n - upper
    propensities = np.ones(n, np.float32)
    propensities[upper:] = 1 - epsilon / lower
    if rng.random() >= epsilon:
        return order, propensities, None
    slot = upper + int(rng.integers(lower))
    shown = np.zeros(candidates, bool)
    shown[order] = True
    pick = np.flatnonzero(~shown)[int(rng.integers(others))]
    explored = order.copy()
    explored[slot] = pick
    propensities[slot] = epsilon / (lower * others)
    return explored, propensities, slot + 1
