"""The settings a process's modules hold rather than receive per call: the free-space reserve of
every large write and the native training step's mode, build directory and compiler. An entry
point parses the settings and hands them over here once (the code location when it loads, a
script that trains directly); until then the modules use the settings' defaults."""

from __future__ import annotations

from pipeline import disk_space
from pipeline.model import native
from pipeline.settings import Settings


def configure(settings: Settings) -> None:
    """Give this process's modules the values of ``settings``."""
    disk_space.set_reserve_mb(settings.publishing.min_free_mb)
    native.configure(settings.native)
