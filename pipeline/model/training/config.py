"""What a training run is asked to do: :class:`TrainConfig`, its modes and the assignment's settings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from pipeline.data.layout import parse_day

Mode = Literal["incremental", "full"]
MODES: tuple[Mode, ...] = get_args(Mode)
REFERENCE_CONSTRAINTS = {"mode": "full", "lr": 1e-8, "epochs": 5, "batch_size": 1024, "validation_days": 0}
"""The assignment's training settings (Adam, the reference architecture, every row of every day
every epoch, so no day held out): deploy/run_configs/reference_constraints.yaml and
``bench/training.py --reference-constraints``."""


@dataclass(frozen=True)
class TrainConfig:
    """A training run's settings, checked when made (ValueError naming the field)."""

    mode: Mode = "incremental"
    hidden: tuple[int, int] = (256, 128)
    lr: float = 2e-3
    batch_size: int = 8192
    epochs: int = 1
    window_start: str | None = None
    window_end: str | None = None
    seed: int = 0
    threads: int = 0  # 0: the faster of 1 and 2, measured as it trains (pipeline.model.threads)
    checkpoint_every_chunks: int = 4
    restart: bool = False
    shuffle_chunks: int = 4
    validation_days: int = 1  # full mode: the window's newest days, held out for model selection

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        sizes = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs,
                 "checkpoint_every_chunks": self.checkpoint_every_chunks, "shuffle_chunks": self.shuffle_chunks,
                 "hidden": min(self.hidden)}
        for name, value in sizes.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("threads", "validation_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or positive, got {getattr(self, name)}")
        for name in ("window_start", "window_end"):
            if getattr(self, name) is not None:
                parse_day(getattr(self, name))
        if self.window_start and self.window_end and self.window_start > self.window_end:
            raise ValueError(f"window_start {self.window_start} is after window_end {self.window_end}")

    def architecture(self) -> dict:
        return {"hidden": list(self.hidden)}
