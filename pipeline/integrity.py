"""A published version's files checked against its record: size and crc32.

Every published version carries a record, ``RECORD`` (``_published.json``), listing each of its
files with its size and crc32 (:mod:`pipeline.publish` writes it). :func:`verify_file` checks a
file against it on read and raises :class:`Corrupt` naming the file and what differs.
"""

from __future__ import annotations

import json
import mmap
import os
import zlib
from pathlib import Path

RECORD = "_published.json"


class Corrupt(ValueError):
    """A published file does not match the size or checksum recorded when it was published."""


def crc32_of(path: Path) -> str:
    """The file's crc32, read through a memory map: the bytes are never copied into Python buffers."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return f"{0:08x}"
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return f"{zlib.crc32(mapped):08x}"


def verify_file(version_dir: Path, name: str, record: dict | None = None) -> Path:
    """``version_dir/name`` after checking its size and crc32 against the version's record."""
    record = record or json.loads((version_dir / RECORD).read_text())
    path = version_dir / name
    expected = record["files"].get(name)
    if expected is None:
        raise Corrupt(f"{path}: not listed in {version_dir / RECORD}")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise Corrupt(f"{path}: {size} bytes, {expected['bytes']} were published (truncated or replaced)")
    crc = crc32_of(path)
    if crc != expected["crc32"]:
        raise Corrupt(f"{path}: crc32 {crc}, {expected['crc32']} was published (the file is corrupt)")
    return path
