"""The same model whatever the thread count: MKL's strict reproducibility, set by the entry points.

Training's matrix products (the torch step's and the native step's alike) are MKL's ``sgemm`` in
libtorch_cpu. MKL splits a product whose summed dimension is long (the step's gradient
``[x 1]ᵀ (dz ⊙ mask)``, a sum over the batch's rows) between its threads, so on 1 and on 2 threads
the rows' terms are added in different orders and the sums round differently: a run whose thread
count changes (the adaptive :class:`pipeline.model.threads.ThreadTuner`, a run resumed on another
count) would train another model. In MKL's strict conditional numerical reproducibility mode,
``MKL_CBWR=AUTO,STRICT``, ``?gemm`` gives the same bits on any number of threads (on its AVX2 and
AVX-512 code paths; ``AUTO`` still picks the path for the CPU, so another CPU may round otherwise).

MKL reads ``MKL_CBWR`` once, at its first call in the process (any matrix product), and the
functions that set it in code are not exported by libtorch_cpu. So :func:`enable_reproducible_blas`
puts it in the environment as the first thing an entry point does: the ``pipeline`` command, the
Dagster code location (``pipeline.definitions``, which every Dagster process that runs steps
imports), the tests' conftest and the benchmarks; processes they start inherit it. It sets the
variable only when it is unset: an operator's ``MKL_CBWR`` wins, and ``MKL_CBWR=OFF`` turns the
mode off (training then depends on the thread count). :func:`warn_if_thread_dependent` tells when
the setting came too late or is off.
"""

from __future__ import annotations

import functools
import os
import warnings

VARIABLE, STRICT = "MKL_CBWR", "AUTO,STRICT"
CHECK_ROWS = 1024  # the summed dimension of the check's product: long enough for MKL to split it


def enable_reproducible_blas() -> str:
    """Set ``MKL_CBWR=AUTO,STRICT`` unless ``MKL_CBWR`` is set; the value in effect. Takes effect
    only when called before the process's first matrix product."""
    return os.environ.setdefault(VARIABLE, STRICT)


@functools.cache
def thread_reproducible() -> bool:
    """Whether a product summed over ``CHECK_ROWS`` rows, shaped as the training step's gradient,
    gives the same bits on 1 and 2 threads in this process (checked once; the thread count is
    restored)."""
    import torch

    g = torch.Generator().manual_seed(0)
    x, h = torch.randn(CHECK_ROWS, 41, generator=g), torch.randn(CHECK_ROWS, 128, generator=g)
    before = torch.get_num_threads()
    try:
        products = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            products.append(torch.mm(x.t(), h))
    finally:
        torch.set_num_threads(before)
    return torch.equal(*products)


@functools.cache
def warn_if_thread_dependent() -> bool:
    """:func:`thread_reproducible`, with a RuntimeWarning (once a process) when it is False."""
    if thread_reproducible():
        return True
    warnings.warn(
        f"matrix products give different bits on 1 and 2 threads in this process ({VARIABLE}="
        f"{os.environ.get(VARIABLE, '(unset)')}): a training run whose thread count changes is not reproducible. "
        f"{VARIABLE}={STRICT} must be in the environment before the first matrix product: start through the "
        f"`pipeline` command or `pipeline.definitions`, or set it where the process starts.",
        RuntimeWarning, stacklevel=2)
    return False
