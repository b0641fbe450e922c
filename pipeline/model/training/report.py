"""What a training run reports: its numbers, its outcome, and the error that stops it."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.model.checkpoint import TrainingState
from pipeline.publish import Published


class NonFiniteTraining(FloatingPointError):
    """Training produced a NaN or infinite loss or weight; nothing was saved."""


@dataclass
class TrainReport:
    mode: str
    resumed: bool
    days: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    mean_loss: float = float("nan")
    prequential: list[dict] = field(default_factory=list)
    discarded_unfinished: bool = False
    threads: dict[str, float] = field(default_factory=dict)
    kernel: str = ""  # FusedTrainer.kernel: "native", or "torch (why)"
    validation: list[dict] = field(default_factory=list)  # per epoch, full mode with validation days
    selected_epoch: int | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TrainResult:
    """A training run's outcome: the model of record after it, what was done, and the version
    published (None when there was nothing new to train on)."""

    state: TrainingState | None
    report: TrainReport
    published: Published | None = None
