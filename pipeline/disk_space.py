"""A full disk, named: one error for every writer, and a free-space reserve checked before large writes.

Every writer of the warehouse (a published candidate and its record, a staged private file, the
checkpoint, the unfinished training run, an export, a processed chunk, a snapshot, the geo index)
reports a full file system the same way: :class:`DiskFull`, an ``OSError`` with ``errno.ENOSPC``
whose message says ``No space left on device``, the path being written, the bytes it needed
(where known) and the bytes free on that file system. Writers whose own error does not say so
(torch's archive writer reports ``[enforce fail at inline_container.cc:…] unexpected pos …``, and
``torch.jit.save`` aborts the process) serialize to memory and write the bytes through
:func:`write_bytes`.

Before a large write, :func:`ensure_room` refuses early when the write would leave less than the
reserve (``PIPELINE_MIN_FREE_MB``) free, so a run fails at its start, naming the space, instead of
filling the disk the online store, Dagster's storage and the logs share. The reserve is the
process's: an entry point sets it once from the settings (:func:`set_reserve_mb`); until then it
is the setting's default.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.settings import PublishingSettings

MIB = 1 << 20
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# torch's zip writer reports a short write as a position mismatch (caffe2/serialize/inline_container.cc)
TORCH_SHORT_WRITE = ("inline_container", "unexpected pos", "PytorchStreamWriter failed writing")
NEARLY_FULL_BYTES = 1 * MIB  # what is left free right after a write failed for want of space


class DiskFull(OSError):
    """No space left on the device holding ``filename``: the message names the path, the bytes
    needed (when known) and free."""

    def __init__(self, path: str | os.PathLike, message: str):
        super().__init__(errno.ENOSPC, message, str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message names the path already

    def __reduce__(self):  # pickled across processes (a multiprocess or Celery step's error)
        return DiskFull, (self.path, self.strerror)


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free (to this user) on the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


_reserve_mb = [PublishingSettings().min_free_mb]


def set_reserve_mb(megabytes: float) -> None:
    """The free space (MiB) this process's large writes must leave from now on; 0: no check."""
    if not megabytes >= 0:
        raise ValueError(f"PIPELINE_MIN_FREE_MB must be 0 or positive, got {megabytes!r}")
    _reserve_mb[0] = megabytes


def reserve_bytes() -> int:
    """The free space large writes must leave (``PIPELINE_MIN_FREE_MB``)."""
    return int(_reserve_mb[0] * MIB)


def _mib(n: int) -> str:
    return f"{n:,} bytes ({n / MIB:,.1f} MiB)"


def disk_full(path: str | os.PathLike, needed: int | None = None, cause: BaseException | None = None) -> DiskFull:
    """The :class:`DiskFull` error for a write to ``path`` that ran out of space."""
    need = f"{_mib(needed)} needed, " if needed is not None else ""
    why = f" ({cause})" if cause is not None and not isinstance(cause, OSError) else ""
    return DiskFull(path, f"No space left on device writing {path}: {need}{_mib(free_bytes(path))} free{why}")


def ensure_room(path: str | os.PathLike, needed: int = 0, what: str = "") -> None:
    """Raise :class:`DiskFull` (before anything is written) when writing ``needed`` bytes to
    ``path`` would leave less than the reserve free (or would not fit at all)."""
    reserve = reserve_bytes()
    if not reserve and not needed:
        return
    free = free_bytes(path)
    if free - needed >= reserve:
        return
    kept = (f", and PIPELINE_MIN_FREE_MB={reserve / MIB:g} asks to keep {_mib(reserve)} free: free space (or "
            f"lower the reserve) and run again" if reserve else "")
    raise DiskFull(path, f"No space left on device writing {path}{f' ({what})' if what else ''}: {_mib(needed)} "
                         f"needed{' (estimated)' if what else ''}, {_mib(free)} free{kept}")


def is_disk_full(error: BaseException, path: str | os.PathLike) -> bool:
    """Whether ``error``, raised writing ``path``, means the file system ran out of space."""
    if isinstance(error, OSError):  # pyarrow's carries the errno only in its message
        return error.errno in FULL_ERRNOS or "No space left on device" in str(error)
    if isinstance(error, RuntimeError) and any(s in str(error) for s in TORCH_SHORT_WRITE):
        with contextlib.suppress(OSError):
            return free_bytes(path) < NEARLY_FULL_BYTES
    return False


@contextlib.contextmanager
def naming_disk_full(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn a write's out-of-space error (``ENOSPC``, ``EDQUOT``, torch's short-write error on a
    full disk) into :class:`DiskFull` naming ``path``; anything else passes unchanged."""
    try:
        yield
    except DiskFull:
        raise
    except (OSError, RuntimeError) as error:
        if is_disk_full(error, path):
            raise disk_full(path, needed, error) from error
        raise


def write_bytes(path: str | os.PathLike, data: bytes | memoryview, shown_as: str | os.PathLike | None = None) -> int:
    """Write ``data`` to ``path`` (a new or staged file) and fsync it, after checking that it
    leaves the reserve free; a full disk raises :class:`DiskFull` naming ``shown_as`` (default
    ``path``: a staged file names its target). Returns the size."""
    size, shown = len(data), shown_as or path
    ensure_room(shown, size)
    with naming_disk_full(shown, size), open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return size


def torch_bytes(save: Callable[[BinaryIO], None]) -> memoryview:
    """What ``save(buffer)`` (``torch.save``, ``torch.jit.save``, ``torch.export.save`` into a file
    object) writes, in memory: torch's own file writer reports a full disk only as ``unexpected
    pos``, and ``torch.jit.save``'s aborts the process."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getbuffer()
