"""Loaded as ``sitecustomize`` into a process a test starts, so it runs inside any entry point (the
``pipeline`` command included): when the process exits, train the native step on 1, 2 and 1
threads and write as JSON to $THREAD_BITS_REPORT the process's MKL_CBWR, the kernel, whether the
three runs gave the same bits, and what the pipeline's own check said (and warned).
"""

import atexit
import json
import os
import warnings

import torch  # imported now (no matrix product yet): modules cannot be first imported at exit

from pipeline.model import native, reproducible
from pipeline.model.fused_trainer import FusedTrainer, bind_to_flat_buffers
from pipeline.model.network import ClickMLP, make_optimizer


def report() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        native.kernels()  # its first load runs the check
    weights, kernel = [], ""
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        torch.manual_seed(5)
        model = ClickMLP()
        trainer = FusedTrainer(bind_to_flat_buffers(model, make_optimizer(model, 1e-3)), 1024)
        g = torch.Generator().manual_seed(0)
        for _ in range(8):
            trainer.step(torch.randn(1024, 40, generator=g) * 2, (torch.rand(1024, generator=g) < 0.46).float())
        weights.append(torch.cat([trainer.flat, trainer.exp_avg, trainer.exp_avg_sq]))
        kernel = trainer.kernel
    with open(os.environ["THREAD_BITS_REPORT"], "w") as out:
        json.dump({"MKL_CBWR": os.environ.get("MKL_CBWR"), "kernel": kernel,
                   "same_bits": all(torch.equal(weights[0], w) for w in weights[1:]),
                   "check": reproducible.thread_reproducible(),
                   "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}, out)


atexit.register(report)
