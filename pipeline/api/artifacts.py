"""What the API serves, kept current: the exported model and the geo index, each reloaded when
the pipeline publishes a new version, verified before it is swapped in, and swapped in by one
assignment so no request sees a half-built state. The same poll holds the online store's live
restaurant snapshot in the recommender (:mod:`pipeline.serving.held_restaurants`), read again
for a new geo index (its rows in the new index's order), not kept twice.

A candidate is served only once it has passed every check: its files match their published
sizes and checksums; the model loads, takes the server's input width, gives finite outputs on
the probe batch recorded with it and reproduces the recorded logits; the geo index's lookup
covers its rows and it holds as many restaurants as recorded. A rejected version never serves
(the previous one keeps serving), is logged once, counted, and shown in ``/health``; it is not
tried again, since a published version never changes.

A version that could not be read (an ``OSError``: its directory or record briefly missing, a
file unreadable, a timeout of the file system) has not failed a check: it is tried again after
a backoff that doubles from the poll interval up to ``RETRY_MAX_S``, for as long as it is the
published one, logged once and shown in ``/health`` meanwhile, not counted as rejected.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.layout import Warehouse
from pipeline.geo.index import GeoIndex
from pipeline.memory import release_free_memory
from pipeline.publish import Artifact
from pipeline.release.registry import Registry
from pipeline.release.switch import export_of
from pipeline.serving.arms import Challenger
from pipeline.serving.recommender import Recommender, Served
from pipeline.serving.scorer import ModelScorer, check_scorer, served_scorer
from pipeline.settings import ReleaseSettings
from pipeline.store.base import FeaturesNotLoaded, FeatureStore, StoreUnavailable

log = logging.getLogger("pipeline.api")
SERVED_ARTIFACTS = ("model", "geo_index")  # what the API loads and serves together
RETRY_MAX_S = 30.0  # the longest wait between two reads of a version that could not be read


@dataclass(frozen=True)
class Loaded:
    version: str
    value: Any             # by its kind: a ModelScorer (model) or a GeoIndex (geo_index)
    record: dict


@dataclass(frozen=True)
class ReloadFailure:
    artifact: str
    version: str
    reason: str
    at: str

    def as_json(self) -> dict:
        return {"artifact": self.artifact, "version": self.version, "reason": self.reason, "at": self.at}


def load_scorer(directory: Path, version: str, record: dict, input_width: int, fmt: str = "recorded") -> ModelScorer:
    """The scorer of a published model version (its format ``fmt``, or the recorded one), once it
    passes the server's checks."""
    scorer = served_scorer(directory, record, version, fmt=fmt)
    check_scorer(scorer, record, input_width)
    return scorer


def load_geo_index(directory: Path, version: str, record: dict, input_width: int) -> GeoIndex:
    """A published geo index version, verified and audited against its record."""
    index = GeoIndex.load_version(directory, verify=True)
    problems = [a.description for a in index.audit(index.ids) if not a.passed]
    if record.get("restaurants") != len(index.ids):
        problems.append(f"holds {len(index.ids)} restaurants, {record.get('restaurants')} were published")
    if problems:
        raise ValueError("; ".join(problems))
    return index


class Artifacts:
    """Holds the current :class:`Recommender`; a background thread polls the published artifacts."""

    def __init__(self, warehouse: Warehouse, store: FeatureStore, poll_interval_s: float = 1.0,
                 model_format: str = "recorded", exploration: float = 0.0,
                 release: ReleaseSettings | None = None):
        self.warehouse, self.store, self.poll_interval_s = warehouse, store, poll_interval_s
        self.exploration, self.release = exploration, release or ReleaseSettings()
        self.registry = Registry(warehouse.registry)
        self._registry_version: str | None = None
        self._wanted_challenger: str | None = None  # the registry's challenger (a checkpoint version)
        self.challenger: Loaded | None = None
        self.input_width = store.user_width + store.restaurant_width
        self._paths = {"model": warehouse.export, "geo_index": warehouse.geo_index}
        self._loaders: dict[str, Callable] = {"model": functools.partial(load_scorer, fmt=model_format),
                                              "geo_index": load_geo_index}
        self.loaded: dict[str, Loaded] = {}
        self.recommender: Recommender | None = None
        self.reloads = 0
        self.failures = dict.fromkeys(SERVED_ARTIFACTS, 0)
        self.last_failure: ReloadFailure | None = None
        self._rejected: set[tuple[str, str]] = set()
        self._retry: dict[tuple[str, str], tuple[int, float]] = {}  # unreadable version → (failures, next try)
        self._hold_failure = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.recommender is not None

    @property
    def model_version(self) -> str:
        return self.loaded["model"].version if "model" in self.loaded else ""

    @property
    def model_record(self) -> dict:
        return self.loaded["model"].record if "model" in self.loaded else {}

    @property
    def model_format(self) -> str:
        """The format of the model being served ("" before one is loaded)."""
        return self.loaded["model"].value.format if "model" in self.loaded else ""

    @property
    def geo_version(self) -> str:
        return self.loaded["geo_index"].version if "geo_index" in self.loaded else ""

    def not_ready_reason(self) -> str:
        missing = [kind for kind in SERVED_ARTIFACTS if kind not in self.loaded]
        if not missing:
            return ""
        unpublished = [kind for kind in missing if Artifact(self._paths[kind]).live_version() is None]
        reason = f"not loaded: {', '.join(missing)}"
        if unpublished:
            reason += f" (nothing published yet: {', '.join(unpublished)})"
        if self.last_failure is not None and self.last_failure.artifact in missing:
            reason += f"; last rejected {self.last_failure.artifact} {self.last_failure.version}: " \
                      f"{self.last_failure.reason}"
        return reason

    def _try_load(self, kind: str) -> bool:
        artifact = Artifact(self._paths[kind])
        version = artifact.live_version()
        current = self.loaded.get(kind)
        if version is None or (current and current.version == version) or (kind, version) in self._rejected:
            return False
        failures, next_try = self._retry.get((kind, version), (0, 0.0))
        if time.monotonic() < next_try:
            return False
        try:
            directory = artifact.version_path(version)
            record = artifact.record(version)
            value = self._loaders[kind](directory, version, record, self.input_width)
        except OSError as error:  # could not be read: maybe a moment later
            self._unreadable(kind, version, failures, error, current)
            return False
        except Exception as error:  # noqa: BLE001 - whatever is wrong with a candidate, it must not serve
            reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
            self._retry.pop((kind, version), None)
            self._rejected.add((kind, version))
            self.failures[kind] += 1
            self.last_failure = ReloadFailure(kind, version, reason, dt.datetime.now(dt.UTC).isoformat())
            log.error("rejected %s version %s: %s; still serving %s", kind, version, reason,
                      current.version if current else "nothing")
            return False
        if self._retry.pop((kind, version), None) and self.last_failure and self.last_failure.version == version:
            self.last_failure = None  # it was only unreadable for a while
        self.loaded[kind] = Loaded(version, value, record)
        return True

    def _unreadable(self, kind: str, version: str, failures: int, error: OSError, current: Loaded | None) -> None:
        wait_s = min(RETRY_MAX_S, self.poll_interval_s * 2 ** failures)
        self._retry = {key: value for key, value in self._retry.items() if key[0] != kind}  # only the live one
        self._retry[(kind, version)] = (failures + 1, time.monotonic() + wait_s)
        reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]} (not readable; " \
                 f"trying again in {wait_s:g} s)"
        self.last_failure = ReloadFailure(kind, version, reason, dt.datetime.now(dt.UTC).isoformat())
        if failures == 0:
            log.warning("could not read %s version %s: %s; still serving %s", kind, version, reason,
                        current.version if current else "nothing")

    def _challenger_changed(self) -> bool:
        """Follow the registry's challenger: load its export once published (checked as the
        champion's is), drop it when the registry names none. True when the challenger changed."""
        version = self.registry.version()
        if version != self._registry_version:
            self._wanted_challenger = self.registry.roles().challenger
            self._registry_version = version
        wanted = self._wanted_challenger
        current = self.challenger
        if wanted is None or wanted == self.champion_checkpoint:
            self.challenger = None
            return current is not None
        if current is not None and current.record.get("checkpoint_version") == wanted:
            return False
        export = Artifact(self._paths["model"])
        export_version = export_of(export, wanted)
        if export_version is None or ("challenger", export_version) in self._rejected:
            return False  # not exported yet (model_exports), or it failed the checks: the champion alone
        try:
            record = export.record(export_version)
            scorer = self._loaders["model"](export.version_path(export_version), export_version, record,
                                            self.input_width)
        except Exception as error:  # noqa: BLE001 - a challenger that does not load never serves
            self._rejected.add(("challenger", export_version))
            self.last_failure = ReloadFailure("challenger", export_version, f"{type(error).__name__}: {error}",
                                              dt.datetime.now(dt.UTC).isoformat())
            log.error("rejected challenger export %s: %s; the champion serves alone", export_version, error)
            return False
        self.challenger = Loaded(export_version, scorer, record)
        log.info("challenger %s (checkpoint %s): canary share %g, shadow share %g", export_version, wanted,
                 self.release.canary_share, self.release.shadow_share)
        return True

    @property
    def champion_checkpoint(self) -> str:
        return self.model_record.get("checkpoint_version", "")

    def _challenger(self) -> Challenger | None:
        loaded = self.challenger
        if loaded is None:
            return None
        return Challenger(loaded.value, loaded.version, loaded.value.format,
                          loaded.record.get("checkpoint_version", ""), self.release.canary_share,
                          self.release.shadow_share)

    def refresh(self) -> bool:
        """Load whichever published artifact changed since the last look (the champion's export,
        the geo index, the registry's challenger), if it passes its checks; True when a new set is
        being served."""
        changed = [kind for kind in SERVED_ARTIFACTS if self._try_load(kind)]
        if self._challenger_changed():
            changed.append("challenger")
        if not changed or len(self.loaded) < len(SERVED_ARTIFACTS):
            return False
        model, geo = self.loaded["model"], self.loaded["geo_index"]
        previous = self.recommender
        recommender = Recommender(geo.value, self.store, model.value,
                                  Served(model.version, model.value.format, geo.version), self.exploration,
                                  challenger=self._challenger())
        if previous is not None and previous.held is not None and previous.geo is geo.value:
            recommender.held = previous.held  # the same geo index: its rows still line up
        self.recommender = recommender  # one assignment: atomic for readers
        self.reloads += 1
        log.info("serving model %s (trained on features %s), geo index %s", model.version,
                 model.record.get("feature_versions"), geo.version)
        return True

    def hold_live_restaurants(self) -> bool:
        """Hold the restaurant snapshot of the store's live version in the recommender, if it is
        not held already; True when a new one is held. A store that does not answer, or holds
        nothing, leaves things as they are: requests read their restaurants from the store."""
        recommender = self.recommender
        if recommender is None:
            return False
        try:
            live = self.store.live()
            if live is None or (recommender.held is not None
                                and recommender.held.snapshot_version == live.restaurants_version):
                return False
            restaurants = self.store.restaurant_features(live.number)
        except (StoreUnavailable, FeaturesNotLoaded) as error:
            if str(error) != self._hold_failure:
                log.warning("restaurant features not held (requests read them from the store): %s", error)
                self._hold_failure = str(error)
            return False
        self._hold_failure = ""
        recommender.hold(restaurants)
        log.info("holding restaurant features %s (%d restaurants)", restaurants.version, len(restaurants.ids))
        del restaurants
        release_free_memory()  # the read's transient slices, in every worker, for as long as it runs
        return True

    def start(self) -> None:
        self.refresh()
        self.hold_live_restaurants()
        if not self.ready:
            log.warning("artifacts not ready yet: %s", self.not_ready_reason())
        self._thread = threading.Thread(target=self._poll, name="artifact-poller", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        said = ""
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.refresh()
                self.hold_live_restaurants()
            except Exception as error:  # noqa: BLE001 - e.g. the warehouse unmounted: keep serving, say it once
                if str(error) != said:
                    log.exception("looking for new artifacts failed; still serving model %s", self.model_version)
                    said = str(error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()
