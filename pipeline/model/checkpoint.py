"""Training checkpoints: explicit files, written atomically.

The model of record is a published artifact (``checkpoint.pt`` in a version directory, see
:mod:`pipeline.publish`); an unfinished run's state is a private file of the training writer.

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
from pipeline.disk_space import torch_bytes, write_bytes
from pipeline.integrity import verify_file
from pipeline.model.network import ClickMLP
from pipeline.publish import Artifact

FORMAT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class Cursor:
    """Where an unfinished run stands: ``plan[position]`` is the current (epoch, pieces) step, of
    which ``chunk`` chunks are done (incremental); ``pending`` holds that day's prequential scores
    until it is done. A full retrain with held-out ``validation`` days keeps each epoch's scores on
    them (``validations``) and the best epoch so far, weights included (``selection``). ``partitions``
    pins each day's processed partition version, the one checked when the run was planned; ``parent``
    names the checkpoint version it continues."""

    mode: str
    plan: list[tuple[int, tuple[tuple[str, int], ...]]]  # a pipeline.model.training.plan.TrainingPlan
    position: int = 0
    chunk: int = 0
    pending: dict | None = None
    fingerprint: str = ""
    validation: list[str] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    selection: dict | None = None
    partitions: dict[str, str] = field(default_factory=dict)  # day → the processed version validated
    parent: str = ""  # the published checkpoint version an incremental run continues ("" for a fresh model)


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
        data = torch_bytes(lambda buffer: torch.save(payload, buffer))
        with staged_file(path) as tmp:
            write_bytes(tmp, data, shown_as=path)

    @classmethod
    def load(cls, path: Path) -> TrainingState | None:
        """The state saved at ``path``; None when there is no file; ValueError naming the file when
        it cannot be read as a training state."""
        try:
            return cls.read(path)
        except FileNotFoundError:
            return None

    @classmethod
    def read(cls, path: Path) -> TrainingState:
        """The state saved at ``path``; FileNotFoundError when there is no file; ValueError naming
        the file when it cannot be read as a training state."""
        try:
            payload = torch.load(path, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as error:  # torch reports a truncated or foreign file in several ways
            raise ValueError(f"{path}: unreadable ({type(error).__name__}: {str(error)[:300]})") from error
        if payload.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported checkpoint format")
        cursor = payload.pop("cursor")
        if cursor is not None:
            cursor["plan"] = [tuple(step) for step in cursor["plan"]]
            cursor = Cursor(**cursor)
        return cls(cursor=cursor, **payload)


def load_unfinished_run(path: Path) -> tuple[TrainingState, Cursor] | None:
    """The unfinished training run saved at ``path`` and its cursor (None when there is none); a
    file that cannot be read as one (a state without a cursor included) raises ValueError naming it
    and saying how to discard it."""
    try:
        state = TrainingState.load(path)
        if state is None:
            return None
        if state.cursor is None:
            raise ValueError("a state without a cursor: a finished checkpoint, not an unfinished run")
        return state, state.cursor
    except ValueError as error:
        raise ValueError(f"{path} holds an unreadable unfinished training run ({error}): start the training run "
                         f"with restart: true to discard it and train from the published checkpoint") from error


def load_published_state(artifact: Path, version: str | None = None) -> TrainingState | None:
    """The checkpoint published at ``artifact`` (live, or the kept ``version``), its file checked
    against the crc32 recorded at publish time; None when nothing is published."""
    published = Artifact(artifact)
    if version is None and published.live_version() is None:
        return None
    directory = published.version_path(version) if version else published.live()
    return TrainingState.read(verify_file(directory, CHECKPOINT_FILE))


def load_checkpoint_model(artifact: Path, version: str | None = None) -> tuple[ClickMLP, TrainingState]:
    """The model of record published at ``artifact`` (or its kept ``version``) as a
    :class:`ClickMLP` in eval mode, with the state it was loaded from; FileNotFoundError when
    nothing is published."""
    state = load_published_state(artifact, version)
    if state is None:
        raise FileNotFoundError(f"no checkpoint published at {artifact}: materialize click_model first")
    model = ClickMLP(tuple(state.hparams["hidden"]))
    model.load_state_dict(state.model)
    return model.eval(), state
