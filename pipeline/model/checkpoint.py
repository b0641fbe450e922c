"""Training checkpoints: explicit files, written atomically.

A checkpoint holds the model and optimizer state, the hyperparameters that shape them, which
partitions the model has been trained on (and their row counts), the feature snapshot versions,
the prequential history, and — while a run is under way — a cursor saying exactly which
(epoch, day, chunk) comes next. Features need no normalization here (they are O(1) already), so
none is stored. Loading a checkpoint and continuing from its cursor reproduces an uninterrupted
run exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.atomic import staged_file

FORMAT_VERSION = 1


@dataclass
class Cursor:
    """Where an unfinished run stands: ``plan[position]`` is the current (epoch, day), of which
    ``chunk`` chunks are done; ``pending`` holds that day's prequential scores until it is done."""

    mode: str
    plan: list[tuple[int, str]]
    position: int = 0
    chunk: int = 0
    pending: dict | None = None
    fingerprint: str = ""


@dataclass
class TrainingState:
    model: dict
    optimizer: dict
    hparams: dict
    trained: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    cursor: Cursor | None = None
    steps: int = 0
    rows_seen: int = 0

    def save(self, path: Path) -> None:
        payload = dataclasses.asdict(self)
        payload["format_version"] = FORMAT_VERSION
        with staged_file(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: Path) -> TrainingState | None:
        if not Path(path).exists():
            return None
        payload = torch.load(path, weights_only=True)
        if payload.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported checkpoint format")
        cursor = payload.pop("cursor")
        if cursor is not None:
            cursor["plan"] = [tuple(step) for step in cursor["plan"]]
            cursor = Cursor(**cursor)
        return cls(cursor=cursor, **payload)
