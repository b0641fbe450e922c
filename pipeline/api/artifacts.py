"""What the API serves, kept current: the exported model and the geo index, reloaded when the
pipeline publishes new ones, swapped in one assignment so no request sees a half-built state."""

from __future__ import annotations

import json
import logging
import threading

from pipeline.data.layout import Warehouse
from pipeline.geo.index import GeoIndex
from pipeline.model.export import MODEL_FILE
from pipeline.publish import RECORD, Artifact, verify_file
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
        self.model_record: dict = {}
        self.geo_version = ""
        self.reloads = 0
        self._seen: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.recommender is not None

    def refresh(self) -> bool:
        """Load the published export and geo index if either changed since the last load; True
        when a new set is live. Each is read from one resolved version directory."""
        export, geo = Artifact(self.warehouse.export), Artifact(self.warehouse.geo_index)
        version = (export.live_version(), geo.live_version())
        if None in version:
            if self.recommender is None:
                log.warning("artifacts not available yet: export %s, geo index %s", *version)
            return False
        if version == self._seen:
            return False
        export_dir, geo_dir = export.version_path(version[0]), geo.version_path(version[1])
        scorer = TorchScriptScorer(verify_file(export_dir, MODEL_FILE), version=version[0])
        index = GeoIndex.load_version(geo_dir, verify=True)
        self.recommender = Recommender(index, self.store, scorer)  # one assignment: atomic for readers
        self.model_version, self._seen = scorer.version, version
        self.model_record = json.loads((export_dir / RECORD).read_text())
        self.geo_version = version[1]
        self.reloads += 1
        log.info("serving model %s (trained on features %s), geo index %s", scorer.version,
                 self.model_record.get("feature_versions"), version[1])
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
