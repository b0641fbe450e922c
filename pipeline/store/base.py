"""The online feature store interface and its compact encoding.

Features are stored per entity as float32 bytes (30 × 4 = 120 B per user, 40 B per restaurant).
A request reads its user and only the restaurants it needs in one round trip. Loads overwrite
entries in place, batch by batch, then remove entities the new snapshot no longer has, so a
concurrent reader sees, for every entity, either its old or its new complete vector, never a
missing or partial one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

KINDS = ("users", "restaurants")
LOAD_BATCH = 10_000


@dataclass
class Fetched:
    """What one read returned: the user's vector (None if unknown) and the restaurants found."""

    user: np.ndarray | None
    restaurants: np.ndarray          # [found, width] float32, in request order
    found: np.ndarray                # bool mask over the requested restaurant ids


def encode(values: np.ndarray) -> list[bytes]:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return [row.tobytes() for row in values]


def decode(blobs: Sequence[bytes], width: int) -> np.ndarray:
    if not blobs:
        return np.empty((0, width), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), width)


class FeatureStore(Protocol):
    user_width: int
    restaurant_width: int

    def fetch(self, user_id: int, restaurant_ids: Sequence[int]) -> Fetched:
        """The user's and the given restaurants' features, in one round trip."""

    def load(self, kind: str, ids: np.ndarray, values: np.ndarray, version: str) -> int:
        """Replace the ``kind`` table with ``ids``/``values`` (batched); return rows written."""

    def version(self, kind: str) -> str | None:
        """The version string of the last complete load of ``kind``."""

    def close(self) -> None: ...
