"""Synthetic inputs drawn from a seed: feature tables for the online stores, a batch for the model."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.store.base import FeatureTable


def feature_tables(seed: int = 0, users: int = 500, restaurants: int = 300, shift: float = 0.0,
                   version: str = "v") -> tuple[FeatureTable, FeatureTable]:
    """(users, restaurants): ids ``3·i`` and ``10 + i``, normal features plus ``shift``, versions
    ``u{version}`` and ``r{version}``."""
    rng = np.random.default_rng(seed)
    return (FeatureTable(np.arange(users) * 3, rng.normal(size=(users, 30)).astype(np.float32) + shift, f"u{version}"),
            FeatureTable(np.arange(restaurants) + 10, rng.normal(size=(restaurants, 10)).astype(np.float32) + shift,
                         f"r{version}"))


def click_batch(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user features, restaurant features, clicks) of ``n`` rows, clicks at the reference's rate (46%)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 30, generator=g) * 2, torch.randn(n, 10, generator=g) * 2,
            (torch.rand(n, generator=g) < 0.46).float())
