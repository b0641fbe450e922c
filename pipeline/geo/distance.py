"""Great-circle distance on a sphere of radius 6,371,000 m (the haversine formula)."""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6_371_000.0
_METRES_PER_DEGREE = np.pi * EARTH_RADIUS_M / 180.0


def haversine_m(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Metres from (lat, lon) to every (lats[i], lons[i]); degrees in, float64 out."""
    phi1, phi2 = np.radians(lat), np.radians(lats)
    dphi = phi2 - phi1
    dlmb = np.radians(lons - lon)
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def within_box(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray, radius_m: float) -> np.ndarray:
    """A cheap superset of the points within ``radius_m``: a latitude band and, where it is
    meaningful, a longitude band (skipped near the poles and across the antimeridian)."""
    dlat = radius_m / _METRES_PER_DEGREE
    mask = np.abs(lats - lat) <= dlat
    if abs(lat) + dlat >= 89.0:
        return mask
    dlon = dlat / np.cos(np.radians(abs(lat) + dlat))
    if dlon >= 180.0 or abs(lon) + dlon >= 180.0:
        return mask
    return mask & (np.abs(lons - lon) <= dlon)
