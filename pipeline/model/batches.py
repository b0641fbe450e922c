"""Model-ready batches: processed rows (snapshot row numbers) gathered into float32 features.

A pool of rows (one chunk, or in a full retrain several chunks of different days) is visited in a
seeded permutation of the whole pool (:class:`Pool`), cut into batches; each batch's user and
restaurant features are gathered (:func:`pipeline.model.inputs.gather`) straight into a
preallocated buffer, the trainer's own input buffer when it has one (training hands the pool to
``FusedTrainer.train_pairs``, which gathers through the permutation). A pool's permutation depends
only on the seed and where the pool stands in the run's plan, so a run resumed from a checkpoint
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.data.features import RESTAURANTS, USERS, FeatureSnapshot, load_snapshot
from pipeline.data.layout import Warehouse
from pipeline.model import inputs


@dataclass
class FeatureTables:
    """User [n, 30] and restaurant [m, 10] float32 features, indexed by snapshot row."""

    users: torch.Tensor
    restaurants: torch.Tensor
    user_snapshot: FeatureSnapshot
    restaurant_snapshot: FeatureSnapshot

    @classmethod
    def load(cls, warehouse: Warehouse, versions: dict[str, str] | None = None) -> FeatureTables:
        """The live snapshots, or the kept versions ``versions["users"]`` and
        ``versions["restaurants"]`` (FileNotFoundError naming them when they are gone)."""
        versions = versions or {}
        users = load_snapshot(warehouse.user_features, USERS, versions.get("users"))
        restaurants = load_snapshot(warehouse.restaurant_features, RESTAURANTS, versions.get("restaurants"))
        return cls(torch.from_numpy(users.values), torch.from_numpy(restaurants.values), users, restaurants)

    def versions(self) -> dict[str, str]:
        return {"users": self.user_snapshot.version, "restaurants": self.restaurant_snapshot.version,
                "users_ids": self.user_snapshot.ids_version,
                "restaurants_ids": self.restaurant_snapshot.ids_version}


def _tensor(values: np.ndarray, dtype) -> torch.Tensor:
    """``values`` as a tensor of ``dtype``, copied only when it must be (another dtype, or a
    read-only memory map of a chunk file)."""
    if values.dtype == dtype and values.flags.writeable:
        return torch.from_numpy(values)
    return torch.from_numpy(np.array(values, dtype=dtype))


def seeded_generator(*key) -> torch.Generator:
    """A generator seeded from ``key`` (e.g. seed, epoch, day, chunk) alone."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


@dataclass(frozen=True)
class Pool:
    """Pairs to train on: user rows and restaurant rows (int32) and clicks (float32) of processed
    chunks, and ``order``, the seeded permutation to visit them in (None: as they are). Batches
    follow the permutation without copying the pool into its order."""

    user_rows: torch.Tensor
    restaurant_rows: torch.Tensor
    clicks: torch.Tensor
    order: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.clicks)

    def batch(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(user rows, restaurant rows, clicks) of positions [start, end) of the visiting order."""
        if self.order is None:
            return self.user_rows[start:end], self.restaurant_rows[start:end], self.clicks[start:end]
        picked = self.order[start:end]
        return (torch.index_select(self.user_rows, 0, picked), torch.index_select(self.restaurant_rows, 0, picked),
                torch.index_select(self.clicks, 0, picked))


class BatchGatherer:
    """Cuts (user_row, restaurant_row, click) arrays into gathered feature batches."""

    def __init__(self, tables: FeatureTables, batch_size: int):
        self.tables, self.batch_size = tables, batch_size
        self._x = torch.empty(batch_size, inputs.WIDTH)

    @staticmethod
    def pool(user_row: np.ndarray, restaurant_row: np.ndarray, click: np.ndarray,
             generator: torch.Generator | None = None) -> Pool:
        """The arrays as a :class:`Pool`, visited in a permutation drawn from ``generator`` when given."""
        clicks = _tensor(click, np.float32)
        order = torch.randperm(len(clicks), generator=generator) if generator is not None else None
        return Pool(_tensor(user_row, np.int32), _tensor(restaurant_row, np.int32), clicks, order)

    def batches(self, user_row: np.ndarray, restaurant_row: np.ndarray, click: np.ndarray,
                generator: torch.Generator | None = None, into: Callable[[int], torch.Tensor] | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x [n, 40] float32, clicks float32) batches, shuffled when a ``generator`` is
        given; x is a reused buffer (``into(n)`` when given), valid until the next batch."""
        pool = self.pool(user_row, restaurant_row, click, generator)
        for start in range(0, len(pool), self.batch_size):
            end = min(start + self.batch_size, len(pool))
            x = into(end - start) if into is not None else self._x[:end - start]
            user_rows, restaurant_rows, clicks = pool.batch(start, end)
            inputs.gather(self.tables.users, self.tables.restaurants, user_rows, restaurant_rows, out=x)
            yield x, clicks
