"""Measuring drift for the model under judgement (:mod:`pipeline.release.drift`): its training
snapshots against the newest, and the challenger's scores against the champion's."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data.features import RESTAURANTS, USERS, load_snapshot
from pipeline.data.layout import Warehouse
from pipeline.data.schema import RESTAURANT_FEATURE_COLUMNS, USER_FEATURE_COLUMNS
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.metrics import probabilities
from pipeline.release import drift
from pipeline.release.evaluation import model_logits
from pipeline.release.registry import Registry

SCORE_PAIRS = 20_000
HISTOGRAMS = 3


def measure(warehouse: Warehouse, score_pairs: int = SCORE_PAIRS, warn: float = drift.WARN,
            block: float = drift.BLOCK, score_warn: float = drift.WARN, score_block: float = 0.5,
            seed: int = 0) -> drift.DriftReport:
    """The drift report of the challenger (else the champion): FileNotFoundError when there is no
    champion, or a snapshot it was trained on is no longer kept."""
    roles = Registry(warehouse.registry).roles()
    model = roles.challenger or roles.champion
    if model is None:
        raise FileNotFoundError("no champion yet: materialize click_model first")
    _, state = load_checkpoint_model(warehouse.checkpoint, model)
    current = FeatureTables.load(warehouse)
    features, histograms = {}, {}
    for spec, names, now in ((USERS, USER_FEATURE_COLUMNS, current.user_snapshot),
                             (RESTAURANTS, RESTAURANT_FEATURE_COLUMNS, current.restaurant_snapshot)):
        kind = spec.name
        reference = load_snapshot(warehouse.features(kind), spec, state.versions.get(kind))
        for column, name in enumerate(names):
            features[f"{kind}/{name}"] = drift.psi(reference.values[:, column], now.values[:, column])
            histograms[f"{kind}/{name}"] = (reference.values[:, column], now.values[:, column])
    report = drift.DriftReport(model, {k: state.versions.get(k, "") for k in ("users", "restaurants")},
                               {"users": current.user_snapshot.version,
                                "restaurants": current.restaurant_snapshot.version},
                               features, champion=roles.champion or "", challenger=roles.challenger or "",
                               warn=warn, block=block, score_warn=score_warn, score_block=score_block)
    report.histograms = {name: drift.histogram(*histograms[name]) for name, _ in report.largest(HISTOGRAMS)}
    if roles.challenger and roles.champion:
        rng = np.random.default_rng(seed)
        users = rng.integers(0, len(current.users), score_pairs).astype(np.int32)
        restaurants = rng.integers(0, len(current.restaurants), score_pairs).astype(np.int32)
        scores = {}
        for version in (roles.champion, roles.challenger):
            network, _ = load_checkpoint_model(warehouse.checkpoint, version)
            with torch.inference_mode():
                scores[version] = probabilities(model_logits(network, current, users, restaurants))
        report.score = drift.psi(scores[roles.champion], scores[roles.challenger])
        report.histograms["score"] = drift.histogram(scores[roles.champion], scores[roles.challenger])
    return report
