"""The plan of a training run: which (day, chunk) pieces it trains on, in which order and pools.

Incremental training walks the new days in order, one day's chunks per step, since each day is
scored before it is trained on. A full retrain starts from scratch, so nothing needs an order:
each epoch visits the window's (day, chunk) pieces in a seeded permutation of its own, cut into
pools of ``shuffle_chunks`` pieces shuffled together, so batches mix days and no epoch ends on the
newest day. The plan, permutations included, is part of an unfinished run's cursor, and its
fingerprint tells whether a resumed run is asked for with the same settings.
"""

from __future__ import annotations

import hashlib
import json

import torch

from pipeline.model.batches import seeded_generator
from pipeline.model.training.config import TrainConfig

TrainingPlan = list[tuple[int, tuple[tuple[str, int], ...]]]
"""(epoch, pieces) steps; a piece is (day, chunk). Incremental: one day's chunks per step, in
order; full: ``shuffle_chunks`` pieces of a permuted epoch per step, pooled."""


def build_plan(config: TrainConfig, days: list[str], chunks: dict[str, int]) -> TrainingPlan:
    """Incremental: the days in order. Full: per epoch, a seeded permutation of every (day, chunk)
    of the window, cut into pools of ``shuffle_chunks``."""
    if config.mode == "incremental":
        return [(0, tuple((day, c) for c in range(chunks[day]))) for day in days]
    pieces = [(day, c) for day in days for c in range(chunks[day])]
    plan = []
    for epoch in range(config.epochs):
        order = torch.randperm(len(pieces), generator=seeded_generator(config.seed, "plan", epoch)).tolist()
        shuffled = [pieces[i] for i in order]
        plan += [(epoch, tuple(shuffled[i:i + config.shuffle_chunks]))
                 for i in range(0, len(shuffled), config.shuffle_chunks)]
    return plan


def fingerprint(config: TrainConfig, plan: TrainingPlan, versions: dict[str, str], validation: list[str]) -> str:
    """A digest of what decides a run's result: the settings, the plan, the feature versions and
    the held-out days."""
    key = json.dumps([config.mode, config.architecture(), config.lr, config.batch_size, config.seed,
                      config.shuffle_chunks, plan, sorted(versions.items()), validation])
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def full_retrain_window(config: TrainConfig, days: list[str]) -> tuple[list[str], list[str]]:
    """(days to train on, days held out for epoch selection) of a full retrain: the processed
    ``days`` in the config's window, its newest ``validation_days`` held out; ValueError when
    that leaves nothing to train on."""
    window = [d for d in days if (config.window_start is None or d >= config.window_start)
              and (config.window_end is None or d <= config.window_end)]
    span = (f"[{config.window_start or 'first day'}, {config.window_end or 'last day'}]: processed days are "
            f"{f'{days[0]} to {days[-1]}' if days else 'none'}")
    if not window:
        raise ValueError(f"full retrain over an empty window {span}")
    if len(window) <= config.validation_days:
        raise ValueError(f"full retrain with {config.validation_days} validation day(s) leaves nothing to "
                         f"train on in the window {span}")
    if config.validation_days:
        return window[:-config.validation_days], window[-config.validation_days:]
    return window, []
