"""The training step and the feature gather as native code (kernels.c), built on first use.

Through torch operators from Python a training step is ~25 operator calls and their passes over
memory around the matrix products; here the whole step is one C call, calling the BLAS torch itself
uses (MKL's ``sgemm_`` in libtorch_cpu); docs/PERFORMANCE.md has what each costs. The torch path
(:class:`FusedTrainer` without kernels) stays: it is what the kernels are tested against and what
runs where they cannot be built.

``PIPELINE_NATIVE_KERNELS`` (:class:`~pipeline.settings.NativeSettings`, which an entry point
hands to :func:`configure`): ``auto`` (the default) builds them with the C compiler (``$CC``, else
``cc``) and falls back to the torch path, saying why, when it cannot; ``required`` raises instead;
``off`` always takes the torch path. The library is built once per source, compiler, torch and CPU
into ``PIPELINE_NATIVE_CACHE_DIR`` (default ``~/.cache/restaurant-pipeline/native``): compiled to a
temporary file, loaded and checked, its sha256 recorded beside it (``kernels-KEY.so.sha256``, written
atomically), then renamed into place, so concurrent first uses never load a partial file; builds
unused for 30 days are removed. A cached library is loaded only if its content has the sha256
recorded when it was built: one truncated, replaced or without a record is rebuilt.

The products give the same bits on any thread count only in MKL's strict reproducibility mode,
which the entry points set (:mod:`pipeline.model.reproducible`); the first load checks it, for
either path, and warns once when it is not in effect.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.atomic import staged_file
from pipeline.model import reproducible
from pipeline.settings import NativeSettings

SOURCE = Path(__file__).with_name("kernels.c")
MODES = ("auto", "required", "off")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC", "-Wl,--no-undefined")
COMPILE_TIMEOUT_S = 120
STALE_TEMPORARY_S = 3600  # a build takes seconds
STALE_BUILD_S = 30 * 86400
_ptr, _i64 = ctypes.c_void_p, ctypes.c_int64


class Trainer(ctypes.Structure):
    """kernels.c's ``Trainer``: where FusedTrainer's buffers are, and Adam's hyperparameters."""

    _fields_ = ([("h1", _i64), ("h2", _i64), ("width", _i64)]
                + [(name, _ptr) for name in ("flat", "grad", "exp_avg", "exp_avg_sq", "step",
                                             "x", "h", "dz", "wb_t", "g_t")]
                + [(name, ctypes.c_double) for name in ("lr", "beta1", "beta2", "eps")]
                + [("users", _ptr), ("restaurants", _ptr)]
                + [(name, _i64) for name in ("n_users", "user_width", "n_restaurants", "restaurant_width")])


class NativeKernelsUnavailable(RuntimeError):
    """The kernels could not be built or loaded (the message says why)."""


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


def check_rows(bad: int, users: torch.Tensor, restaurants: torch.Tensor, user_rows: torch.Tensor,
               restaurant_rows: torch.Tensor) -> None:
    """IndexError naming the pair a kernel's gather stopped at (``bad``; -1: none)."""
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
    name = _settings[0].compiler or "cc"
    found = shutil.which(name)
    if found is None:
        raise NativeKernelsUnavailable(f"no C compiler: {name!r} is not on PATH (install gcc, or set CC)")
    return found


def _torch_lib() -> Path:
    return Path(torch.__file__).parent / "lib"


def _cpu_signature() -> str:
    """What -march=native compiles for: the architecture and the CPU's feature flags."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    flags = next((line for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))), "")
    return f"{platform.machine()} {flags}"


def build(directory: Path, cc: str) -> Path:
    """The library for this source, compiler, torch and CPU in ``directory``: reused when built
    before, else compiled, loaded and checked, then published by rename (builds unused for 30 days
    removed)."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S).stdout
    key = hashlib.blake2b("\0".join([SOURCE.read_text(), " ".join(FLAGS), version, torch.__version__,
                                     str(_torch_lib()), _cpu_signature()]).encode(), digest_size=8).hexdigest()
    path = directory / f"kernels-{key}.so"
    if path.exists() and unrecorded(path) is None:
        return path
    lib = _torch_lib()
    with staged_file(path) as tmp:
        command = [cc, *FLAGS, str(SOURCE), "-o", str(tmp), f"-L{lib}", "-ltorch_cpu", "-lm", f"-Wl,-rpath,{lib}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            raise NativeKernelsUnavailable(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
        _check(_load(tmp))
        with staged_file(_record_of(path)) as record:  # before the library is renamed into place
            record.write_text(f"{_sha256(tmp)}  {path.name}\n")
    _remove_unused(directory)
    return path


def _record_of(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def unrecorded(path: Path) -> str | None:
    """Why the library at ``path`` is not the one its build recorded (no record, another
    sha256), or None when it is."""
    try:
        recorded = _record_of(path).read_text().split()[0]
    except (FileNotFoundError, IndexError):
        return f"{path} has no recorded sha256 ({_record_of(path).name})"
    actual = _sha256(path)
    if actual != recorded:
        return f"{path} has sha256 {actual}, its build recorded {recorded} (truncated or replaced)"
    return None


def _remove_unused(directory: Path) -> None:
    """Builds no process has loaded for STALE_BUILD_S (another checkout's torch, an older source)
    and temporaries of killed builds; a build in use is touched at every load."""
    now = time.time()
    for old, limit in [(p, STALE_BUILD_S) for p in directory.glob("kernels-*.so")] + [
            (p, STALE_TEMPORARY_S) for p in directory.glob(".kernels-*.tmp-*")]:
        with contextlib.suppress(FileNotFoundError):
            if now - old.stat().st_mtime > limit:
                old.unlink()  # a process that has it loaded keeps its mapping
                if old.suffix == ".so":
                    _record_of(old).unlink(missing_ok=True)


def _load(path: Path) -> Kernels:
    library = ctypes.CDLL(str(path))
    library.gather.restype = ctypes.c_int64
    library.gather.argtypes = [_ptr, _i64, _i64, _ptr, _i64, _i64, _ptr, _ptr, _i64, _ptr, _i64]
    library.train_step.restype = None
    library.train_step.argtypes = [ctypes.POINTER(Trainer), _ptr, _i64, _ptr, _ptr]
    library.train_batch.restype = ctypes.c_int64
    library.train_batch.argtypes = [ctypes.POINTER(Trainer), _ptr, _ptr, _ptr, _ptr, _i64, _ptr, _ptr]
    return Kernels(path, library)


def _check(kernels: Kernels) -> None:
    """A small gather against index_select: the build links and computes before it is published."""
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
        path = build(directory, compiler())
        os.utime(path)  # in use: not removed as unused
        changed = unrecorded(path)  # checked again just before loading: build() may have returned a reused one
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
