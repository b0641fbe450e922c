"""The restaurant features of one snapshot held in the API worker, in its geo index's row order.

A request whose live store version holds that snapshot reads only its user from the store: one
small read instead of one restaurant row per restaurant in range (every restaurant within 20 km
of the city centre is ~6,300 rows). The store version is checked on every request, in the same
round trip as the user, so a request never mixes snapshots: while a newly published snapshot is
not held yet, requests read their restaurants from the store as before.

Memory: one float32 row per restaurant of the geo index (40 bytes at the reference's width: 4 MB
for 100,000 restaurants).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.geo.index import GeoIndex
from pipeline.store.base import FeatureTable, Fetched, UserRead


@dataclass(frozen=True)
class HeldRestaurants:
    snapshot_version: str
    values: np.ndarray   # [geo index rows, width] float32; zeros where the snapshot lacks the row
    present: np.ndarray  # bool per geo index row

    @classmethod
    def aligned(cls, geo: GeoIndex, table: FeatureTable) -> HeldRestaurants:
        """``table``'s rows placed at their geo index rows (restaurants the index lacks are dropped:
        no request can reach them)."""
        rows = geo.rows_of(table.ids)
        known = rows >= 0
        values = np.zeros((len(geo.ids), table.values.shape[1]), np.float32)
        values[rows[known]] = table.values if known.all() else table.values[known]
        present = np.zeros(len(geo.ids), bool)
        present[rows[known]] = True
        return cls(table.version, values, present)

    def read(self, user: UserRead, rows: np.ndarray) -> Fetched:
        """What a store read of these geo index rows would return, for ``user``'s version."""
        found = self.present[rows]
        return Fetched(user.user, self.values[rows[found]], found, user.version)
