"""torch's intra-op thread count for training: fixed, or chosen by measuring as it trains.

Measured here (docs/PERFORMANCE.md): which count steps faster changes with the load (with one
competing busy process, a thread waits on its preempted partner) and with the step itself (the
native step's single-threaded parts lose to the BLAS thread spinning beside them). No fixed count
is right in every condition, so by default training measures: a short probe of each candidate
count, then the fastest for a stretch of steps, then probe again, since conditions change during
a run. The probe steps are real training steps, not extra work. MKL's strict reproducibility mode,
which the entry points set (:mod:`pipeline.model.reproducible`), makes the matrix products' bits
independent of the count (tested): a resumed run is bit-identical whatever was chosen before and
after the kill.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
CANDIDATES = (1, 2)
PROBE_STEPS = 24
WARMUP_STEPS = 4  # of each probe, not timed: the thread pool wakes up
STRETCH_STEPS = 2048


class ThreadTuner:
    """``threads`` > 0: that many threads throughout; 0: the fastest of ``candidates``, re-measured
    every ``stretch_steps`` steps. :meth:`paced` wraps the batches of a training loop and times
    each step (the time from handing out one batch to asking for the next)."""

    def __init__(self, threads: int = 0, candidates: tuple[int, ...] = CANDIDATES, probe_steps: int = PROBE_STEPS,
                 stretch_steps: int = STRETCH_STEPS):
        if threads < 0:
            raise ValueError(f"threads must be 0 (adaptive) or positive, got {threads}")
        self.fixed, self.candidates = threads, candidates
        self.probe_steps, self.stretch_steps = probe_steps, stretch_steps
        self.steps_at: Counter[int] = Counter()  # steps run at each thread count
        self._phases: list[tuple[int, bool]] = []  # (threads, probing) still to run
        self._current, self._probing, self._left = threads or candidates[0], False, 0
        self._timed: dict[int, list[float]] = {}
        torch.set_num_threads(self._current)

    def paced(self, batches: Iterable[T]) -> Iterator[T]:
        for item in batches:
            if not self.fixed and self._left == 0:
                self._next_phase()
            started = time.perf_counter()
            yield item
            self.steps_at[self._current] += 1
            if self.fixed:
                continue
            self._left -= 1
            if self._probing and self._left < self.probe_steps - WARMUP_STEPS:
                self._timed[self._current].append(time.perf_counter() - started)

    def _next_phase(self) -> None:
        if not self._phases:
            if self._timed:  # a probe round just ended: run the fastest for a stretch
                best = min(self._timed, key=lambda t: sorted(self._timed[t])[len(self._timed[t]) // 2])
                self._phases, self._timed = [(best, False)], {}
            else:
                self._phases = [(t, True) for t in self.candidates]
                self._timed = {t: [] for t in self.candidates}
        self._current, self._probing = self._phases.pop(0)
        self._left = self.probe_steps if self._probing else self.stretch_steps
        torch.set_num_threads(self._current)

    def summary(self) -> dict[str, float]:
        """Share of the steps run at each thread count, e.g. {"steps_on_1_thread": 0.1, ...}."""
        total = sum(self.steps_at.values()) or 1
        return {f"steps_on_{t}_thread{'s' if t > 1 else ''}": round(n / total, 4)
                for t, n in sorted(self.steps_at.items())}
