"""The training step and the feature gather as native code (kernels.c), built on first use.

Through torch operators from Python a training step is ~25 operator calls and their passes over
memory around the matrix products; here the whole step is one C call. Its matrix products go
through torch's public C++ operator API (aten_matmul.cpp: ``at::mm_out``, what ``torch.mm(out=)``
calls), so they run the BLAS routine torch's own path runs; docs/PERFORMANCE.md has what each costs.
The torch path (:class:`FusedTrainer` without kernels) stays: it is what the kernels are tested
against and what runs where they cannot be built.

``PIPELINE_NATIVE_KERNELS`` (:class:`~pipeline.settings.NativeSettings`, which an entry point
hands to :func:`configure`): ``auto`` (the default) builds them with the C and C++ compilers
(``$CC`` and ``$CXX``, else ``cc`` and ``c++``) against torch's headers and libraries, and falls back
to the torch path, saying why, when it cannot; ``required`` raises instead; ``off`` always takes the
torch path. The library is built once per source, compiler, torch and CPU into
``PIPELINE_NATIVE_CACHE_DIR`` (default ``~/.cache/restaurant-pipeline/native``): compiled to a
temporary file, loaded and checked (a small gather, and :class:`Trainer` against the C structure's
layout), its sha256 recorded beside it (``kernels-KEY.so.sha256``, written atomically), then renamed
into place, so concurrent first uses never load a partial file; builds unused for 30 days are
removed. A cached library is loaded only if its content has the sha256 recorded when it was built:
one truncated, replaced or without a record is rebuilt.

The products give the same bits on any thread count only in MKL's strict reproducibility mode,
which the entry points set (:mod:`pipeline.model.reproducible`); the first load checks it, for
either path, and warns once when it is not in effect.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.model import reproducible
from pipeline.model.native import build
from pipeline.model.native.build import NativeKernelsUnavailable
from pipeline.settings import NativeSettings

MODES = ("auto", "required", "off")
DONE, MATMUL_FAILED = -1, -2  # kernels.c's statuses; a status >= 0 is the position of a row outside the tables
_ptr, _i64 = ctypes.c_void_p, ctypes.c_int64


class Trainer(ctypes.Structure):
    """kernels.c's ``Trainer``: where FusedTrainer's buffers are, and Adam's hyperparameters (checked
    against the library's ``trainer_layout`` before a build is published)."""

    _fields_ = ([("h1", _i64), ("h2", _i64), ("width", _i64)]
                + [(name, _ptr) for name in ("flat", "grad", "exp_avg", "exp_avg_sq", "step",
                                             "x", "h", "dz", "wb_t", "g_t")]
                + [(name, ctypes.c_double) for name in ("lr", "beta1", "beta2", "eps")]
                + [("users", _ptr), ("restaurants", _ptr)]
                + [(name, _i64) for name in ("n_users", "user_width", "n_restaurants", "restaurant_width")])


class Field(ctypes.Structure):
    """kernels.c's ``Field``: one row of ``trainer_layout``."""

    _fields_ = [("name", ctypes.c_char_p), ("kind", ctypes.c_char), ("offset", _i64)]


_KINDS = {_i64: b"i", ctypes.c_double: b"d", _ptr: b"p"}


class NativeMatmulFailed(RuntimeError):
    """A matrix product of the native step raised in ATen (the message is ATen's)."""


@dataclass(frozen=True)
class Kernels:
    """The loaded library: ``gather``, ``train_step`` and ``train_batch`` (the two in one call) of kernels.c."""

    path: Path
    library: ctypes.CDLL

    @staticmethod
    def takes(users: torch.Tensor, restaurants: torch.Tensor, user_rows: torch.Tensor,
              restaurant_rows: torch.Tensor) -> bool:
        """Whether the kernels gather these operands: contiguous float32 tables, contiguous int32 rows."""
        return (users.dtype == restaurants.dtype == torch.float32 and user_rows.dtype == restaurant_rows.dtype
                == torch.int32 and users.is_contiguous() and restaurants.is_contiguous()
                and user_rows.is_contiguous() and restaurant_rows.is_contiguous())

    def gather(self, users: torch.Tensor, restaurants: torch.Tensor, user_rows: torch.Tensor,
               restaurant_rows: torch.Tensor, out: torch.Tensor) -> bool:
        """Write the model input of the pairs into ``out`` as :func:`pipeline.model.inputs.gather`
        does, when the kernel :meth:`takes` the operands and ``out``'s rows are contiguous float32;
        False (nothing written) otherwise."""
        if not (self.takes(users, restaurants, user_rows, restaurant_rows) and out.dtype == torch.float32
                and out.stride(1) == 1 and out.shape[1] == users.shape[1] + restaurants.shape[1]
                and len(out) == len(user_rows) == len(restaurant_rows)):
            return False
        bad = self.library.gather(users.data_ptr(), len(users), users.shape[1], restaurants.data_ptr(),
                                  len(restaurants), restaurants.shape[1], user_rows.data_ptr(),
                                  restaurant_rows.data_ptr(), len(out), out.data_ptr(), out.stride(0))
        check_rows(bad, users, restaurants, user_rows, restaurant_rows)
        return True

    def check_step(self, status: int) -> None:
        """NativeMatmulFailed with ATen's message when a step's ``status`` is MATMUL_FAILED."""
        if status == MATMUL_FAILED:
            raise NativeMatmulFailed(self.library.native_last_error().decode(errors="replace"))

    def layout_mismatch(self, mirror: type[ctypes.Structure] = Trainer) -> str | None:
        """How ``mirror`` (:class:`Trainer`) differs from the library's ``trainer_layout``: a field's
        name, kind or offset, or the size; None when they agree."""
        rows = ctypes.cast(ctypes.addressof(Field.in_dll(self.library, "trainer_layout")), ctypes.POINTER(Field))
        fields, i = [], 0
        while rows[i].name is not None:
            fields.append((rows[i].name.decode(), rows[i].kind, rows[i].offset))
            i += 1
        size = rows[i].offset
        mirrored = [(field[0], _KINDS.get(field[1], b"?"), getattr(mirror, field[0]).offset)
                    for field in mirror._fields_]
        if fields == mirrored and size == ctypes.sizeof(mirror):
            return None
        pairs = enumerate(zip(fields, mirrored, strict=False))
        differs = next((f"field {i}: {a} in C, {b} in Python" for i, (a, b) in pairs if a != b),
                       f"{len(fields)} fields in C, {len(mirrored)} in Python")
        return f"{differs} (size {size} bytes in C, {ctypes.sizeof(mirror)} in Python)"


def check_rows(bad: int, users: torch.Tensor, restaurants: torch.Tensor, user_rows: torch.Tensor,
               restaurant_rows: torch.Tensor) -> None:
    """IndexError naming the pair a kernel's gather stopped at (``bad``; DONE: none)."""
    if bad < 0:
        return
    user, restaurant = int(user_rows[bad]), int(restaurant_rows[bad])
    table, row, rows = (("user", user, len(users)) if not 0 <= user < len(users)
                        else ("restaurant", restaurant, len(restaurants)))
    raise IndexError(f"{table} row {row} (pair {bad} of {len(user_rows)}) is outside the {rows}-row {table} table")


_settings = [NativeSettings()]


def configure(settings: NativeSettings) -> None:
    """The mode, build directory and compiler of this process's kernels from now on (decided again
    at the next use when they change)."""
    if settings.kernels not in MODES:
        raise ValueError(f"PIPELINE_NATIVE_KERNELS must be one of {MODES}, got {settings.kernels!r}")
    if settings != _settings[0]:
        _settings[0] = settings
        _loaded.cache_clear()


def mode() -> str:
    return _settings[0].kernels


def cache_dir() -> Path:
    return _settings[0].build_dir()


def compiler() -> str:
    return build.found(_settings[0].compiler or "cc", "C", "gcc", "CC")


def cxx_compiler() -> str:
    return build.found(_settings[0].cxx_compiler or "c++", "C++", "g++", "CXX")


def build_into(directory: Path) -> Path:
    """The kernels built (or reused) in ``directory`` with this process's compilers, checked before
    they are published."""
    return build.build(directory, compiler(), cxx_compiler(), lambda built: _check(_load(built)))


def _load(path: Path) -> Kernels:
    library = ctypes.CDLL(str(path))
    library.gather.restype = ctypes.c_int64
    library.gather.argtypes = [_ptr, _i64, _i64, _ptr, _i64, _i64, _ptr, _ptr, _i64, _ptr, _i64]
    library.train_step.restype = ctypes.c_int64
    library.train_step.argtypes = [ctypes.POINTER(Trainer), _ptr, _i64, _ptr, _ptr]
    library.train_batch.restype = ctypes.c_int64
    library.train_batch.argtypes = [ctypes.POINTER(Trainer), _ptr, _ptr, _ptr, _ptr, _i64, _ptr, _ptr]
    library.native_last_error.restype = ctypes.c_char_p
    library.native_last_error.argtypes = []
    return Kernels(path, library)


def _check(kernels: Kernels) -> None:
    """The structures agree, and a small gather equals index_select: the build links and computes
    before it is published."""
    mismatch = kernels.layout_mismatch()
    if mismatch:
        raise NativeKernelsUnavailable(f"the built kernels do not match their Python mirror: {mismatch}")
    users, restaurants = torch.arange(12.0).view(4, 3), torch.arange(10.0, 16.0).view(3, 2)
    user_rows, restaurant_rows = torch.tensor([3, 0, 2], dtype=torch.int32), torch.tensor([1, 2, 0], dtype=torch.int32)
    out = torch.zeros(3, 6)
    kernels.gather(users, restaurants, user_rows, restaurant_rows, out[:, :5])
    expected = torch.cat([users[user_rows.long()], restaurants[restaurant_rows.long()], torch.zeros(3, 1)], 1)
    if not torch.equal(out, expected):
        raise NativeKernelsUnavailable(f"the built kernels gave a wrong gather: {out.tolist()}")


@functools.cache
def _loaded() -> Kernels | str:
    """The kernels, or why there are none (once per process)."""
    reproducible.warn_if_thread_dependent()
    if mode() == "off":
        return "PIPELINE_NATIVE_KERNELS=off"
    try:
        directory = cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = build_into(directory)
        os.utime(path)  # in use: not removed as unused
        changed = build.unrecorded(path)  # checked again just before loading: build() may have returned a reused one
        if changed:
            raise NativeKernelsUnavailable(f"refusing to load {path}: {changed}")
        return _load(path)
    except (NativeKernelsUnavailable, OSError, subprocess.SubprocessError) as error:
        if mode() == "required":
            raise NativeKernelsUnavailable(f"PIPELINE_NATIVE_KERNELS=required, but the kernels are unavailable: "
                                           f"{error}") from error
        return str(error)


def kernels() -> Kernels | None:
    """The native kernels, or None when ``PIPELINE_NATIVE_KERNELS`` is ``off`` or (``auto``) they
    cannot be built; :func:`unavailable_reason` says why."""
    loaded = _loaded()
    return loaded if isinstance(loaded, Kernels) else None


def unavailable_reason() -> str | None:
    loaded = _loaded()
    return None if isinstance(loaded, Kernels) else loaded
