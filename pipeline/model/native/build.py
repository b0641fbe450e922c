"""Building the native kernels: kernels.c and aten_matmul.cpp compiled against the installed torch,
published whole into a per-machine cache keyed by everything that shapes the binary, each build's
sha256 recorded beside it; unused builds and killed builds' temporaries removed."""

from __future__ import annotations

import contextlib
import hashlib
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.atomic import staged_file

SOURCE = Path(__file__).with_name("kernels.c")
MATMUL_SOURCE = Path(__file__).with_name("aten_matmul.cpp")
C_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC")
CXX_FLAGS = ("-O2", "-std=c++20", "-fPIC")
LINK_FLAGS = ("-shared", "-Wl,--no-undefined")
COMPILE_TIMEOUT_S = 120
STALE_TEMPORARY_S = 3600  # a build takes seconds
STALE_BUILD_S = 30 * 86400


class NativeKernelsUnavailable(RuntimeError):
    """The kernels could not be built or loaded (the message says why)."""


def found(name: str, language: str, package: str, variable: str) -> str:
    """The path of compiler ``name``, or NativeKernelsUnavailable saying how to get one."""
    path = shutil.which(name)
    if path is None:
        raise NativeKernelsUnavailable(f"no {language} compiler: {name!r} is not on PATH (install {package}, "
                                       f"or set {variable})")
    return path


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


def _version(compiler: str) -> str:
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S).stdout


def build(directory: Path, cc: str, cxx: str, check: Callable[[Path], None]) -> Path:
    """The library for these sources, compilers, torch and CPU in ``directory``: reused when built
    before, else compiled, checked (``check`` raises on the built file when it is not fit), then
    published by rename (builds unused for 30 days removed)."""
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"  # torch's C++ library ABI
    key = hashlib.blake2b("\0".join([SOURCE.read_text(), MATMUL_SOURCE.read_text(), " ".join(C_FLAGS + CXX_FLAGS),
                                     abi, _version(cc), _version(cxx), torch.__version__, str(_torch_lib()),
                                     _cpu_signature()]).encode(), digest_size=8).hexdigest()
    path = directory / f"kernels-{key}.so"
    if path.exists() and unrecorded(path) is None:
        return path
    lib, include = _torch_lib(), _torch_lib().parent / "include"
    with staged_file(path) as tmp:
        objects = [Path(f"{tmp}.kernels.o"), Path(f"{tmp}.aten_matmul.o")]
        try:
            _run([cc, *C_FLAGS, "-c", str(SOURCE), "-o", str(objects[0])])
            _run([cxx, *CXX_FLAGS, abi, f"-I{include}", "-c", str(MATMUL_SOURCE), "-o", str(objects[1])])
            _run([cxx, *LINK_FLAGS, *map(str, objects), "-o", str(tmp), f"-L{lib}", "-ltorch_cpu", "-lc10", "-lm",
                  f"-Wl,-rpath,{lib}"])
        finally:
            for built_object in objects:
                built_object.unlink(missing_ok=True)
        check(tmp)
        with staged_file(_record_of(path)) as record:  # before the library is renamed into place
            record.write_text(f"{_sha256(tmp)}  {path.name}\n")
    _remove_unused(directory)
    return path


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    if done.returncode != 0:
        raise NativeKernelsUnavailable(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")


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
