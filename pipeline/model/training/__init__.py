"""Incremental and full training over processed click partitions, resumable at chunk granularity.

- incremental: warm-start from the published checkpoint (the lineage's head: the challenger, else
  the champion) and train once on every processed day it has not been trained on (a fresh model when none is published);
- full: a fresh model trained on every day of a window for N epochs (every row every epoch).

One writer at a time (the checkpoint artifact's lock, held for the whole run). An unfinished run
lives in its own file (``Warehouse.training_run``), saved atomically every few chunks and at the
end of every step, so a run killed at any moment and started again continues where it stands and
trains every (epoch, day, chunk) exactly once, with the same result as a run never killed. A
completed run's candidate is published, as the lineage's head, only when it passes the audits
(finite weights, and the caller's gate: the absolute bar and the comparison with the champion,
:mod:`pipeline.release.gate`), and its role is recorded (:mod:`pipeline.release.registry`); a
non-finite loss or weight stops the run at once, naming the day and chunk, and discards the
unfinished run. A run that would recreate a retired model is rejected before it trains.

The parts, in the order a run uses them:

- ``config``: :class:`TrainConfig`, the modes and the assignment's settings;
- ``start``: the unfinished run resumed, or a new run planned (``plan``: which pieces in which
  order; ``partitions``: the partition versions it reads);
- ``session``: the run under way and the pool step both modes train with;
- ``incremental`` and ``full``: one loop per mode (``selection``: a full retrain's best epoch);
- ``release``: the candidate audited and published; ``run``: :func:`train`, all of it under the lock.
"""

from pipeline.model.training.config import MODES, REFERENCE_CONSTRAINTS, Mode, TrainConfig
from pipeline.model.training.release import EVALUATION_FILE, FINITE_CHECK, Gate
from pipeline.model.training.report import NonFiniteTraining, TrainReport, TrainResult
from pipeline.model.training.run import train
from pipeline.model.training.scoring import score_partitions

__all__ = ["EVALUATION_FILE", "FINITE_CHECK", "MODES", "REFERENCE_CONSTRAINTS", "Gate", "Mode", "NonFiniteTraining",
           "TrainConfig", "TrainReport", "TrainResult", "score_partitions", "train"]
