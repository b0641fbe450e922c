"""Saving an unfinished run's state: fsynced before its rename and its directory after (seen by strace)."""

import shutil
import subprocess
import sys

import pytest

from pipeline.model.checkpoint import TrainingState

_SAVE = """
import sys, torch
from pathlib import Path
from pipeline.model.checkpoint import TrainingState
TrainingState({"w": torch.zeros(1000)}, {}, {"hidden": [8, 4]}).save(Path(sys.argv[1]))
"""


def test_the_unfinished_run_is_fsynced_before_and_after_its_rename(tmp_path):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install -y strace): it shows the process's fsync calls")
    run_file, trace = tmp_path / "training" / "run.pt", tmp_path / "trace"
    subprocess.run(["strace", "-f", "-y", "-qq", "-o", str(trace), "-e", "trace=fsync,fdatasync,rename,renameat,"
                    "renameat2", sys.executable, "-c", _SAVE, str(run_file)], check=True, timeout=120)
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines()]
    temp = next(c for c in calls if c.startswith("rename") and f'"{run_file}"' in c).split('"')[1]
    renamed = next(i for i, c in enumerate(calls) if c.startswith("rename") and f'"{run_file}"' in c)
    synced = [i for i, c in enumerate(calls) if c.startswith(("fsync(", "fdatasync(")) and f"<{temp}>" in c]
    dir_synced = [i for i, c in enumerate(calls) if c.startswith("fsync(") and f"<{run_file.parent}>" in c]
    assert synced and min(synced) < renamed, calls  # the data is on the device before the name points to it
    assert dir_synced and max(dir_synced) > renamed, calls  # and the rename itself
    assert TrainingState.load(run_file).hparams == {"hidden": [8, 4]}
