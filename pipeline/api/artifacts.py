"""What the API serves, kept current: the exported model and the geo index, reloaded when the
pipeline publishes new ones, swapped in one assignment so no request sees a half-built state."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pipeline.atomic import file_version
from pipeline.data.layout import Warehouse
from pipeline.geo.index import GeoIndex, lookup_path
from pipeline.serving.recommender import Recommender
from pipeline.serving.scorer import TorchScriptScorer
from pipeline.store.base import FeatureStore

log = logging.getLogger("pipeline.api")


class Artifacts:
    """Holds the current :class:`Recommender`; a background thread polls the artifact files."""

    def __init__(self, warehouse: Warehouse, store: FeatureStore, poll_interval_s: float = 1.0):
        self.warehouse, self.store, self.poll_interval_s = warehouse, store, poll_interval_s
        self.recommender: Recommender | None = None
        self.model_version = ""
        self.reloads = 0
        self._seen: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.recommender is not None

    def _paths(self) -> tuple[Path, Path, Path]:
        layout = self.warehouse
        return layout.torchscript, layout.geo_index, lookup_path(layout.geo_index)

    def refresh(self) -> bool:
        """Load the artifacts if they changed since the last load; True when a new set is live."""
        try:
            version = tuple(file_version(p) for p in self._paths())
        except FileNotFoundError as missing:
            if self.recommender is None:
                log.warning("artifacts not available yet: %s", missing)
            return False
        if version == self._seen:
            return False
        scorer = TorchScriptScorer(self.warehouse.torchscript)
        geo = GeoIndex.load(self.warehouse.geo_index)
        self.recommender = Recommender(geo, self.store, scorer)  # one assignment: atomic for readers
        self.model_version, self._seen = scorer.version, version
        self.reloads += 1
        log.info("serving model %s", scorer.version)
        return True

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="artifact-poller", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.refresh()
            except Exception:  # a bad artifact must not kill the poller: keep serving the last good one
                log.exception("reloading artifacts failed; still serving model %s", self.model_version)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()
