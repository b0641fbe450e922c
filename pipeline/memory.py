"""Giving freed heap memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)  # glibc's; other C libraries have none


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system (glibc ``malloc_trim(0)``); False
    where the C library has no such call. After a large transient allocation (reading a whole
    restaurant snapshot: ~10 MB of slices and temporaries at 100,000 restaurants) glibc keeps the
    freed pages, and a long-lived worker's resident memory would keep them too."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
