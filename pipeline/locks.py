"""The one-writer lock: an exclusive ``flock`` on a file beside what it guards. The kernel releases
it when its holder dies, even by SIGKILL, so a killed writer never blocks the next one. Every
published artifact and the SQLite online store take their writer lock here."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DEFAULT_LOCK_TIMEOUT_S = 6 * 3600.0


class LockTimeout(TimeoutError):
    """Another writer held an artifact's lock for longer than the caller would wait."""


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, what: str = "",
              on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); wait for another holder at
    most ``timeout_s``. The kernel releases it when the holder dies, even by SIGKILL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, told = time.monotonic() + timeout_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            if time.monotonic() > deadline:
                raise LockTimeout(f"{what or path}: another writer ({holder or 'unknown'}) held the lock "
                                  f"for more than {timeout_s:.0f} s") from None
            if not told and on_wait is not None:
                on_wait(f"waiting for the writer of {what or path} ({holder or 'unknown'}) to finish")
                told = True
            time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {dt.datetime.now(dt.UTC).isoformat()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
