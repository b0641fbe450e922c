"""Model-ready batches: processed rows (snapshot row numbers) gathered into float32 features.

A chunk is shuffled as a whole (the rows it holds), then cut into batches; each batch's user and
restaurant features are gathered with ``index_select`` into preallocated buffers (3–9× faster
than fancy indexing and concatenation). The permutation of a chunk depends only on
(seed, epoch, day, chunk), so a run resumed from a checkpoint sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
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


def chunk_generator(seed: int, epoch: int, day: str, chunk: int) -> torch.Generator:
    digest = hashlib.blake2b(f"{seed}/{epoch}/{day}/{chunk}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


class BatchGatherer:
    """Cuts (user_row, restaurant_row, click) arrays into gathered feature batches."""

    def __init__(self, tables: FeatureTables, batch_size: int):
        self.tables, self.batch_size = tables, batch_size
        self._users = torch.empty(batch_size, tables.users.shape[1])
        self._restaurants = torch.empty(batch_size, tables.restaurants.shape[1])
        self._x = torch.empty(batch_size, inputs.WIDTH)

    def batches(self, user_row: np.ndarray, restaurant_row: np.ndarray, click: np.ndarray,
                generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x [n, 40] float32, clicks float32) batches; x is a reused buffer, valid until
        the next batch is requested."""
        users_idx = torch.from_numpy(np.array(user_row, dtype=np.int32))  # chunks are read-only maps
        restaurants_idx = torch.from_numpy(np.array(restaurant_row, dtype=np.int32))
        clicks = torch.from_numpy(np.array(click, dtype=np.float32))
        if generator is not None:
            order = torch.randperm(len(clicks), generator=generator)
            users_idx, restaurants_idx, clicks = users_idx[order], restaurants_idx[order], clicks[order]
        for start in range(0, len(clicks), self.batch_size):
            end = min(start + self.batch_size, len(clicks))
            n = end - start
            u, r, x = self._users[:n], self._restaurants[:n], self._x[:n]
            torch.index_select(self.tables.users, 0, users_idx[start:end], out=u)
            torch.index_select(self.tables.restaurants, 0, restaurants_idx[start:end], out=r)
            inputs.pairs(u, r, out=x)
            yield x, clicks[start:end]

