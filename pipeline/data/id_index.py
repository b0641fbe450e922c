"""External ids to the row numbers of a table sorted by id. numpy only: the geo index, which the
API loads, uses it without the feature-reading code (and polars) of :mod:`pipeline.data.features`."""

from __future__ import annotations

import numpy as np


class IdIndex:
    """Maps external ids to row numbers of a snapshot; unknown ids map to -1.

    Dense ids (the reference's 0…N-1) use a lookup array; sparse ids fall back to binary search.
    """

    def __init__(self, ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        self.size = len(ids)
        if not np.all(ids[1:] > ids[:-1]):
            raise ValueError("IdIndex needs unique ids sorted ascending")
        self._ids = ids
        span = int(ids[-1]) + 1 if len(ids) else 0
        self._lookup = None
        if len(ids) and ids[0] >= 0 and span <= 4 * len(ids) + (1 << 20):
            self._lookup = np.full(span, -1, dtype=np.int32)
            self._lookup[ids] = np.arange(len(ids), dtype=np.int32)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """int32 row of each id, -1 where the id is unknown."""
        ids = np.asarray(ids)
        if self._lookup is not None:
            span = len(self._lookup)
            inside = (ids >= 0) & (ids < span)
            rows = self._lookup[np.where(inside, ids, 0)]
            rows[~inside] = -1
            return rows
        pos = np.searchsorted(self._ids, ids).astype(np.int32)
        np.minimum(pos, max(self.size - 1, 0), out=pos)
        found = self._ids[pos] == ids if self.size else np.zeros(len(ids), bool)
        pos[~found] = -1
        return pos
