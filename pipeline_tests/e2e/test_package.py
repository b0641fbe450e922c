"""The package as deploy/Dockerfile and any non-editable install get it: the wheel built from what the
Dockerfile copies holds every non-Python file under pipeline/, and installed into a fresh virtual
environment (no checkout on its path) it generates a dataset, builds a warehouse and trains with the
native step required."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PYTHON = Path(sys.executable)


def _dockerfile_sources() -> list[str]:
    """What deploy/Dockerfile copies into its build (``COPY src... dest``)."""
    sources = []
    for line in (ROOT / "deploy/Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources += [word for word in line.split()[1:-1] if not word.startswith("--")]
    return sources


def _package_data() -> set[str]:
    """Every file under pipeline/ that is not Python source (nor bytecode): what the code opens next to itself."""
    return {path.relative_to(ROOT).as_posix() for path in (ROOT / "pipeline").rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts}


def _build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel`` of a copy of what the Dockerfile copies, offline, with the build tools of this venv."""
    source.mkdir()
    for name in _dockerfile_sources():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    done = subprocess.run([str(PYTHON), "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "--wheel-dir", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    return wheel


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A virtual environment with only ``wheel`` installed; the dependencies come from this venv's
    site-packages through a path line in a .pth file (a path line does not run that directory's own
    .pth files, so the editable install's finder of the checkout stays inactive)."""
    subprocess.run([str(PYTHON), "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin/python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # without a PYTHONPATH naming the checkout: pip would take the checkout for the installed project
    outside = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    done = subprocess.run([str(PYTHON), "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "--quiet", str(wheel)], capture_output=True, text=True, env=outside)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return python


TRAIN = """
import datetime as dt, sys
from pathlib import Path
import pipeline
from pipeline import runtime
from pipeline.data.layout import ReferenceDataset, Warehouse
from pipeline.model.training import TrainConfig, train
from pipeline.settings import load_settings
from warehouse_build import build_from_reference

runtime.configure(load_settings())  # this script is the entry point: PIPELINE_NATIVE_KERNELS=required

warehouse = Warehouse(Path("warehouse"))
build_from_reference(ReferenceDataset(Path("dataset"), dt.date(2026, 1, 1)), warehouse, days=2)
result = train(warehouse, TrainConfig(mode="full", epochs=1, batch_size=1024, threads=1), log=lambda message: None)
print(pipeline.__file__, result.report.kernel, result.published is not None, sep="\\n")
"""


@pytest.mark.slow
def test_the_wheel_installed_without_the_checkout_trains_with_the_native_step_required(tmp_path):
    wheel = _build_wheel(tmp_path / "source", tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "pipeline/model/native/kernels.c" in names
    assert _package_data() <= names, _package_data() - names

    python = _fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "work"  # outside the checkout: nothing resolves against it
    work.mkdir()
    # the installed package builds the warehouse as the tests do (the development package is not part of it)
    shutil.copy2(ROOT / "devtools/pipeline_devtools/warehouse_build.py", work / "warehouse_build.py")
    (work / "train.py").write_text(TRAIN)
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONPATH", "VIRTUAL_ENV") and not name.startswith("PIPELINE_")}
    env.update(PIPELINE_NATIVE_KERNELS="required", PIPELINE_NATIVE_CACHE_DIR=str(tmp_path / "native-cache"))
    generated = subprocess.run([str(python.parent / "pipeline"), "generate", "--out", "dataset", "--preset", "tiny",
                                "--train-files", "2", "--test-files", "1", "--rows-per-file", "4000", "--quiet"],
                               cwd=work, env=env, capture_output=True, text=True)
    assert generated.returncode == 0, generated.stderr[-3000:]
    done = subprocess.run([str(python), "train.py"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    location, kernel, published = done.stdout.split("\n")[-4:-1]
    assert Path(location).is_relative_to(tmp_path / "venv"), location  # the installed copy, not the checkout
    assert kernel == "native"
    assert published == "True"
    assert list((tmp_path / "native-cache").glob("kernels-*.so"))  # built from the installed kernels.c
