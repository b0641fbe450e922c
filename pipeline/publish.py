"""Write, audit, publish: the one way anything a later run or the API reads becomes visible.

An artifact at ``PATH`` is a set of immutable versions and a pointer to the live one::

    PATH                              symlink → .NAME.versions/VERSION (the live version)
    .NAME.versions/VERSION/           a complete, audited version: its files and _published.json
    .NAME.versions/.staging-XXXX/     a candidate being written (only its writer knows its name)
    .NAME.lock                        the writer lock: one writer at a time (flock; a killed
                                      writer's lock is released by the kernel)

A writer takes the lock, writes a candidate into a fresh staging directory, runs the audits on
the candidate as written, and only if every audit passes renames it to ``VERSION`` and switches
the symlink with one ``rename`` (atomic). A failed audit raises :class:`~pipeline.audits.Rejected`, naming the
artifact, the check and why; the candidate is deleted and the previous version stays live. A
killed writer leaves a staging directory that the next writer removes. After a switch the
versions other than the live one and the one before it are removed, so a reader that resolved
the previous pointer an instant ago still finds its files, and :func:`rollback` has somewhere to go;
the versions an artifact *pins* (``pinned``: a model's champion and challenger, say) stay too. A
version can also be published beside the live one without becoming live (``live=False``: a
challenger's model), and made live later (:meth:`Artifact.point_to`).

Before a candidate is written, the free space is checked against the reserve
(``PIPELINE_MIN_FREE_MB``, :func:`pipeline.disk_space.ensure_room`) with the live version's size as
the estimate of what the candidate needs; a write that runs out of space anyway raises
:class:`~pipeline.disk_space.DiskFull` naming the file or staging directory, the bytes free and
(when known) needed. Either way the candidate is deleted and the previous version stays live.

Readers resolve the pointer once (:meth:`Artifact.live`) and read every file of a version from
that directory, so two files of one artifact never come from two versions. Every file's size and
crc32 are recorded in ``_published.json``; :func:`pipeline.integrity.verify_file` checks them on read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import fsync_dir, fsync_file
from pipeline.audits import AuditResult, Rejected
from pipeline.disk_space import ensure_room, naming_disk_full
from pipeline.integrity import RECORD, crc32_of
from pipeline.locks import DEFAULT_LOCK_TIMEOUT_S, file_lock


@dataclass
class Published:
    """What a publish made live."""

    artifact: Path
    version: str
    path: Path                      # the version's directory (stable: read every file from here)
    previous: str | None
    audits: list[AuditResult]
    bytes: int
    record: dict
    written: Any = None             # what the writer returned

    def read_json(self, name: str) -> dict:
        """A JSON file of the published version."""
        return json.loads((self.path / name).read_text())


def new_version_id() -> str:
    """Sortable and unique: UTC time to the microsecond plus a random suffix."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


class Artifact:
    """A published artifact at ``path`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, keep: int = 2, pinned: Callable[[], Iterable[str]] | None = None):
        self.path = Path(path)
        self.keep = max(keep, 1)
        self.pinned = pinned  # versions a prune keeps besides the live one and its predecessors
        self.versions_dir = self.path.with_name(f".{self.path.name}.versions")
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")

    # ----- reading

    def live_version(self) -> str | None:
        try:
            target = os.readlink(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # a plain file or directory: not published this way
                return None
            raise
        return Path(target).name

    def live(self) -> Path:
        """The live version's directory; FileNotFoundError naming the artifact when there is none."""
        version = self.live_version()
        if version is None:
            raise FileNotFoundError(f"nothing published at {self.path}")
        return self.version_path(version)

    def version_path(self, version: str) -> Path:
        path = self.versions_dir / version
        if not path.is_dir():
            raise FileNotFoundError(f"version {version} of {self.path} is not kept any more "
                                    f"(kept: {', '.join(self.versions()) or 'none'})")
        return path

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if not p.name.startswith(".") and (p / RECORD).exists())

    def current(self) -> Published:
        """The live version as a :class:`Published` (its recorded audits included)."""
        path = self.live()
        record = json.loads((path / RECORD).read_text())
        return Published(self.path, record["version"], path, record.get("previous"),
                         [AuditResult(**a) for a in record.get("audits", [])],
                         sum(f["bytes"] for f in record["files"].values()), record)

    def record(self, version: str | None = None) -> dict:
        """The ``_published.json`` of ``version`` (default: the live one)."""
        path = self.version_path(version) if version else self.live()
        return json.loads((path / RECORD).read_text())

    # ----- writing

    @contextlib.contextmanager
    def lock(self, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        with file_lock(self.lock_path, timeout_s, str(self.path), on_wait):
            yield

    def remove_leftovers(self) -> int:
        """Delete what killed writers left (staging directories, half-made pointers); call with
        the lock held. Returns how many were removed."""
        removed = 0
        if self.versions_dir.is_dir():
            for stale in self.versions_dir.glob(".staging-*"):
                shutil.rmtree(stale, ignore_errors=True)
                removed += 1
        for stale in self.path.parent.glob(f".{self.path.name}.link-*"):
            stale.unlink(missing_ok=True)
            removed += 1
        return removed

    @contextlib.contextmanager
    def candidate(self) -> Iterator[Path]:
        """A fresh, empty staging directory (call with the lock held); removed on error."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.versions_dir / f".staging-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def publish_candidate(self, staging: Path, audits: Sequence[AuditResult], version: str | None = None,
                          record: dict | None = None, live: bool = True) -> Published:
        """Publish the audited ``staging`` directory as ``version`` (call with the lock held); with
        ``live=False`` it is kept beside the live version, which stays live (a challenger's model:
        :meth:`point_to` makes it live later). Raises :class:`Rejected` if any audit failed."""
        if not all(r.passed for r in audits):
            raise Rejected(self.path, audits)
        version = version or new_version_id()
        previous = self.live_version()
        files = {p.name: {"bytes": p.stat().st_size, "crc32": crc32_of(p)}
                 for p in sorted(staging.iterdir()) if p.is_file() and p.name != RECORD}
        published = {"version": version, "previous": previous if previous != version else None,
                     "published_at": dt.datetime.now(dt.UTC).isoformat(), "files": files,
                     "audits": [asdict(r) for r in audits], **(record or {})}
        with naming_disk_full(staging / RECORD):
            (staging / RECORD).write_text(json.dumps(published, indent=2, default=str))
        final = self.versions_dir / version
        if final.exists():  # the same content again (content-addressed versions): keep the one there
            published = json.loads((final / RECORD).read_text())
        else:
            with naming_disk_full(staging):
                _fsync_dir_files(staging)
            os.rename(staging, final)
        if live:
            with naming_disk_full(self.path):
                self._point_to(version)
        self._prune(keep_also=() if live else (version,))
        return Published(self.path, version, final, previous, list(audits),
                         sum(f["bytes"] for f in published["files"].values()), published)

    def point_to(self, version: str) -> None:
        """Make the kept ``version`` live (call with the lock held); FileNotFoundError naming the
        versions kept when it is not one of them."""
        if not (self.versions_dir / version / RECORD).exists():
            raise FileNotFoundError(f"{self.path}: version {version} is not kept (kept: "
                                    f"{', '.join(self.versions()) or 'none'})")
        self._point_to(version)

    def _point_to(self, version: str) -> None:
        if self.path.exists() and not self.path.is_symlink():
            self._adopt_unversioned()
        link = self.path.with_name(f".{self.path.name}.link-{uuid.uuid4().hex[:12]}")
        os.symlink(os.path.join(self.versions_dir.name, version), link)
        os.replace(link, self.path)
        fsync_dir(self.path.parent)

    def _adopt_unversioned(self) -> None:
        """A plain file or directory from before versioning: moved aside, not deleted."""
        os.rename(self.path, self.path.with_name(f".{self.path.name}.unversioned-{uuid.uuid4().hex[:6]}"))

    def _prune(self, keep_also: Sequence[str] = ()) -> None:
        live = self.live_version()
        chain = {live}  # the live version and its predecessors, ``keep`` of them
        version = live
        while version and len(chain) < self.keep:
            try:
                version = json.loads((self.versions_dir / version / RECORD).read_text()).get("previous")
            except FileNotFoundError:
                break
            if version:
                chain.add(version)
        keep = chain | {*keep_also, *(self.pinned() if self.pinned else ())}
        for path in self.versions_dir.iterdir():
            if not path.name.startswith(".") and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def live_bytes(self) -> int:
        """The size of the live version's files as recorded (0 when nothing is published)."""
        try:
            return sum(f["bytes"] for f in self.record()["files"].values())
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return 0

    def write_audit_publish_locked(self, write: Callable[[Path], Any],
                                   audit: Callable[[Path, Any], Sequence[AuditResult]],
                                   version: str | Callable[[Any], str] | None = None,
                                   record: dict | Callable[[Any], dict] | None = None,
                                   live: bool = True) -> Published:
        """Remove leftovers, check the free space (the live version's size as the estimate),
        ``write(candidate_dir)``, ``audit(candidate_dir, written)``, publish (call with the lock
        held). Raises :class:`Rejected` (nothing published) on a failed audit and
        :class:`~pipeline.disk_space.DiskFull` when the space is short."""
        self.remove_leftovers()
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        ensure_room(self.path, self.live_bytes(), "a new version, as large as the live one")
        with self.candidate() as staging:
            with naming_disk_full(staging):
                written = write(staging)
            results = list(audit(staging, written))
            chosen = version(written) if callable(version) else version
            extra = record(written) if callable(record) else record
            published = self.publish_candidate(staging, results, chosen, extra, live)
            published.written = written
            return published

    def rollback(self, to: str | None = None, lock_timeout_s: float = 60.0) -> tuple[str, str]:
        """Make a kept version live again: ``to``, or the live version's predecessor. Returns
        (from, to). Nothing is deleted: the version rolled back from stays until the next publish."""
        with self.lock(lock_timeout_s):
            live = self.live_version()
            if live is None:
                raise FileNotFoundError(f"nothing published at {self.path}")
            target = to or self.record(live).get("previous")
            if not target or not (self.versions_dir / target / RECORD).exists():
                raise FileNotFoundError(f"{self.path}: {'version ' + to if to else 'no previous version'} is not "
                                        f"kept to roll back to (kept: {', '.join(self.versions())})")
            self.point_to(target)
            return live, target


def write_audit_publish(path: str | os.PathLike, write: Callable[[Path], Any],
                        audit: Callable[[Path, Any], Sequence[AuditResult]],
                        version: str | Callable[[Any], str] | None = None,
                        record: dict | Callable[[Any], dict] | None = None, keep: int = 2,
                        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                        on_wait: Callable[[str], None] | None = None, live: bool = True,
                        pinned: Callable[[], Iterable[str]] | None = None) -> Published:
    """The whole cycle for the artifact at ``path``: take the writer lock, remove leftovers,
    ``write(candidate_dir)``, ``audit(candidate_dir, written)``, publish. Returns :class:`Published`
    (``.written``: what ``write`` returned); raises :class:`Rejected` (nothing published) on a failed audit."""
    artifact = Artifact(path, keep, pinned)
    with artifact.lock(lock_timeout_s, on_wait):
        return artifact.write_audit_publish_locked(write, audit, version, record, live)


def _fsync_dir_files(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            fsync_file(path)
    fsync_dir(directory)
